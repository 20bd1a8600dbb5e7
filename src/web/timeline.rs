//! A purchase's timeline as an SVG picture, drawn from its history alone: one lane per state
//! it visited, a bar for the time it spent in each, every call as a mark coloured by its
//! outcome (its width is the call's latency), the waits between steps as spans (a backoff after
//! a failed call, a poll or the queue otherwise), the checkout and the order-list lookups that
//! reconcile it highlighted, operator actions as diamonds, and the end as a flag. Time runs
//! left to right on a compressed axis ([`Scale`]): every step stays visible whether the
//! purchase took 20 ms or 20 days.
//!
//! Pure: the same rows give the same picture. Every element carries a class and `data-`
//! attributes naming what it shows, so a test (or a browser's find) reads the picture as data.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use pcsaga_engine::{HistoryRow, SagaRecord, SagaStatus};

use super::html::{attr, escape};

/// Most marks drawn; the history table under the picture lists every row.
pub const MAX_MARKS: usize = 2000;

const WIDTH: f64 = 1000.0;
const LABEL: f64 = 190.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 30.0;
const LANE: f64 = 30.0;
const AXIS: f64 = 34.0;

/// How a call ended, as the picture colours it.
fn outcome(row: &HistoryRow) -> &'static str {
    match row.error_class.as_deref() {
        None => "ok",
        Some("throttled") => "throttled",
        Some("outcome_unknown") => "unknown",
        Some(_) => "failed",
    }
}

/// Where a time goes across the picture. Compressed: between two consecutive moments that
/// something happened (a row, or a call's start), the picture gives a width proportional to
/// the square root of the gap, not the gap. A purchase whose first states take milliseconds
/// and whose polls take minutes, or days, then shows every step apart, in order, while a
/// longer wait still draws longer. The axis labels give the real times at their positions.
struct Scale {
    start: DateTime<Utc>,
    /// (ms since start, fraction of the width), increasing in both.
    knots: Vec<(f64, f64)>,
}

impl Scale {
    fn new(start: DateTime<Utc>, end: DateTime<Utc>, history: &[HistoryRow]) -> Self {
        let offset = |at: DateTime<Utc>| (at - start).num_milliseconds().max(0) as f64;
        let span = offset(end);
        let mut moments: Vec<f64> = vec![0.0, span];
        for row in history {
            let at = offset(row.at).min(span);
            moments.push(at);
            if let Some(ms) = row.latency_ms.filter(|_| row.call.is_some()) {
                moments.push((at - ms as f64).max(0.0));
            }
        }
        moments.sort_by(f64::total_cmp);
        moments.dedup();
        let weights: Vec<f64> = moments.windows(2).map(|w| (w[1] - w[0]).sqrt()).collect();
        let total: f64 = weights.iter().sum();
        let mut knots = vec![(moments[0], 0.0)];
        let mut done = 0.0;
        for (i, w) in weights.iter().enumerate() {
            done += w;
            let fraction = if total > 0.0 { done / total } else { 1.0 };
            knots.push((moments[i + 1], fraction));
        }
        Self { start, knots }
    }

    /// The fraction of the width at `ms` since the start.
    fn fraction(&self, ms: f64) -> f64 {
        let i = self.knots.partition_point(|(t, _)| *t < ms);
        match (i.checked_sub(1).map(|j| self.knots[j]), self.knots.get(i)) {
            (_, Some(&(t, f))) if t == ms => f,
            (Some((t0, f0)), Some(&(t1, f1))) => f0 + (f1 - f0) * (ms - t0) / (t1 - t0),
            (None, _) => 0.0,
            (Some(_), None) => 1.0,
        }
    }

    /// The time since the start (ms) at a fraction of the width: the inverse, for the axis.
    fn at_fraction(&self, fraction: f64) -> f64 {
        let i = self.knots.partition_point(|(_, f)| *f < fraction);
        match (i.checked_sub(1).map(|j| self.knots[j]), self.knots.get(i)) {
            (Some((t0, f0)), Some(&(t1, f1))) if f1 > f0 => {
                t0 + (t1 - t0) * (fraction - f0) / (f1 - f0)
            }
            (_, Some(&(t, _))) => t,
            (Some((t, _)), None) => t,
            (None, None) => 0.0,
        }
    }

    fn x(&self, at: DateTime<Utc>) -> f64 {
        let ms = (at - self.start).num_milliseconds().max(0) as f64;
        LABEL + self.fraction(ms) * (WIDTH - LABEL - RIGHT)
    }
}

/// The state a row moved the purchase to: a step that ended the purchase names its status
/// (`failed`) there, which is no state.
fn moved_to(row: &HistoryRow) -> Option<&str> {
    row.to_state
        .as_deref()
        .filter(|to| SagaStatus::parse(to).is_none())
}

/// The states in the order the purchase first visited them.
fn lanes(saga: &SagaRecord, history: &[HistoryRow]) -> Vec<String> {
    let mut lanes: Vec<String> = Vec::new();
    let visits = history
        .iter()
        .flat_map(|r| [r.state.as_deref(), moved_to(r)])
        .flatten()
        .chain(std::iter::once(saga.state.as_str()));
    for state in visits {
        if !lanes.iter().any(|l| l == state) {
            lanes.push(state.to_owned());
        }
    }
    lanes
}

/// The stays: each state from when it was entered until the next change.
fn stays(
    saga: &SagaRecord,
    history: &[HistoryRow],
    end: DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let Some(first) = history.first() else {
        return vec![(saga.state.clone(), saga.created_at, end)];
    };
    let mut current = first.state.clone().unwrap_or_else(|| saga.state.clone());
    let mut since = first.at.min(saga.created_at);
    for row in history {
        if let Some(to) = moved_to(row).filter(|to| *to != current) {
            out.push((current.clone(), since, row.at));
            current = to.to_owned();
            since = row.at;
        }
    }
    out.push((current, since, end));
    out
}

/// The SVG of `saga`'s history, as of `now` (an active purchase's picture runs to now).
pub fn render(saga: &SagaRecord, history: &[HistoryRow], now: DateTime<Utc>) -> String {
    let start = history
        .first()
        .map_or(saga.created_at, |r| r.at.min(saga.created_at));
    let last = history.last().map_or(saga.updated_at, |r| r.at);
    let end = if saga.status == SagaStatus::Active {
        now.max(last)
    } else {
        last
    };
    let scale = Scale::new(start, end, history);
    let lanes = lanes(saga, history);
    let lane_y = |state: Option<&str>| -> f64 {
        let index = state
            .and_then(|s| lanes.iter().position(|l| l == s))
            .unwrap_or(0);
        TOP + index as f64 * LANE
    };
    let height = TOP + lanes.len() as f64 * LANE + AXIS;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" \
         role=\"img\" aria-label=\"timeline of purchase {id}\" data-purchase=\"{id}\" data-status=\"{status}\">",
        id = attr(&saga.id),
        status = saga.status,
    );
    let _ = write!(
        svg,
        "<title>Purchase {} from {} to {}</title>",
        escape(&saga.id),
        start.to_rfc3339(),
        end.to_rfc3339()
    );
    draw_lanes(&mut svg, &lanes, height);
    for (state, from, to) in stays(saga, history, end) {
        let (x0, x1) = (scale.x(from), scale.x(to));
        let _ = write!(
            svg,
            "<rect class=\"stay\" data-state=\"{s}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h}\"><title>{s}: {from} to {to}</title></rect>",
            s = attr(&state),
            y = lane_y(Some(&state)) + 9.0,
            w = (x1 - x0).max(2.0),
            h = LANE - 18.0,
            from = from.format("%H:%M:%S%.3f"),
            to = to.format("%H:%M:%S%.3f"),
        );
    }
    draw_waits(&mut svg, history, &scale, &lane_y);
    draw_marks(&mut svg, history, &scale, &lane_y);
    draw_end(&mut svg, saga, &scale, end, &lane_y);
    draw_axis(&mut svg, &scale, start, height);
    svg.push_str("</svg>");
    svg
}

fn draw_lanes(svg: &mut String, lanes: &[String], height: f64) {
    for (i, state) in lanes.iter().enumerate() {
        let y = TOP + i as f64 * LANE;
        let money = if state == "Checkout" { " money" } else { "" };
        let _ = write!(
            svg,
            "<g class=\"lane{money}\" data-state=\"{s}\"><rect class=\"lane-bg\" x=\"0\" y=\"{y}\" width=\"{WIDTH}\" height=\"{LANE}\"/>\
             <text class=\"lane-label\" x=\"8\" y=\"{ty:.1}\">{s}</text></g>",
            s = escape(state),
            ty = y + LANE / 2.0 + 4.0,
        );
    }
    let _ = write!(
        svg,
        "<line class=\"edge\" x1=\"{LABEL}\" y1=\"{TOP}\" x2=\"{LABEL}\" y2=\"{:.1}\"/>",
        height - AXIS
    );
}

/// The waits: from a step's end to the next claim of the purchase.
fn draw_waits(
    svg: &mut String,
    history: &[HistoryRow],
    scale: &Scale,
    lane_y: &dyn Fn(Option<&str>) -> f64,
) {
    let mut waiting: Option<(&HistoryRow, &'static str)> = None;
    for row in history {
        match row.kind.as_str() {
            "submitted" | "released" => waiting = Some((row, "queue")),
            "transition" | "operator" => {
                let why = if row.error_class.is_some() {
                    "backoff"
                } else {
                    "poll"
                };
                waiting = Some((row, why));
            }
            "claimed" => {
                if let Some((from, why)) = waiting.take() {
                    let (x0, x1) = (scale.x(from.at), scale.x(row.at));
                    if x1 - x0 >= 1.0 {
                        let state = moved_to(from).or(from.state.as_deref());
                        let _ = write!(
                            svg,
                            "<rect class=\"wait {why}\" data-kind=\"{why}\" data-state=\"{s}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"6\"><title>{why}: {ms} ms</title></rect>",
                            s = attr(state.unwrap_or("")),
                            y = lane_y(state) + LANE - 8.0,
                            w = x1 - x0,
                            ms = (row.at - from.at).num_milliseconds(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// The calls, the checkout intents and the operator actions.
fn draw_marks(
    svg: &mut String,
    history: &[HistoryRow],
    scale: &Scale,
    lane_y: &dyn Fn(Option<&str>) -> f64,
) {
    let mut drawn = 0;
    for row in history {
        if drawn >= MAX_MARKS {
            let _ = write!(
                svg,
                "<text class=\"more\" x=\"{LABEL}\" y=\"16\">only the first {MAX_MARKS} marks are drawn; the table lists every step</text>"
            );
            return;
        }
        let y = lane_y(row.state.as_deref());
        let x = scale.x(row.at);
        let state = attr(row.state.as_deref().unwrap_or(""));
        if let Some(call) = &row.call {
            drawn += 1;
            let outcome = outcome(row);
            let lookup = if call == "list_orders" {
                " reconcile"
            } else {
                ""
            };
            let began = row.at
                - chrono::Duration::milliseconds(
                    i64::try_from(row.latency_ms.unwrap_or(0)).unwrap_or(0),
                );
            let width = (x - scale.x(began)).max(3.0);
            let status = row
                .http_status
                .map_or_else(|| "no reply".to_owned(), |s| s.to_string());
            let _ = write!(
                svg,
                "<g class=\"attempt {outcome}{lookup}\" data-state=\"{state}\" data-call=\"{c}\" data-outcome=\"{outcome}\">\
                 <rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{width:.1}\" height=\"{h}\" rx=\"1.5\"/>\
                 <title>{c} in {state}: {status}{class}{error} ({ms} ms)</title></g>",
                c = attr(call),
                x0 = (x - width).max(LABEL),
                y0 = y + 5.0,
                h = LANE - 10.0,
                class = row
                    .error_class
                    .as_deref()
                    .map(|c| format!(", {}", escape(c)))
                    .unwrap_or_default(),
                error = row
                    .error
                    .as_deref()
                    .map(|e| format!(": {}", escape(e)))
                    .unwrap_or_default(),
                ms = row.latency_ms.unwrap_or(0),
            );
        }
        match row.kind.as_str() {
            "intent" if row.state.as_deref() == Some("Checkout") => {
                drawn += 1;
                let _ = write!(
                    svg,
                    "<g class=\"checkout\" data-state=\"{state}\"><line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{y2:.1}\"/>\
                     <text x=\"{tx:.1}\" y=\"{ty:.1}\">checkout sent</text>\
                     <title>checkout sent with request id {rid}</title></g>",
                    y2 = y + LANE,
                    tx = x + 3.0,
                    ty = TOP - 6.0,
                    rid = attr(row.request_id.as_deref().unwrap_or("(in the detail)")),
                );
            }
            "operator" => {
                drawn += 1;
                let cy = y + LANE / 2.0;
                let _ = write!(
                    svg,
                    "<g class=\"operator\" data-state=\"{state}\"><path d=\"M{x:.1} {t:.1} L{r:.1} {cy:.1} L{x:.1} {b:.1} L{l:.1} {cy:.1} Z\"/>\
                     <title>operator: {d}</title></g>",
                    t = cy - 7.0,
                    b = cy + 7.0,
                    r = x + 7.0,
                    l = x - 7.0,
                    d = escape(row.detail.as_deref().unwrap_or("")),
                );
            }
            _ => {}
        }
    }
}

fn draw_end(
    svg: &mut String,
    saga: &SagaRecord,
    scale: &Scale,
    end: DateTime<Utc>,
    lane_y: &dyn Fn(Option<&str>) -> f64,
) {
    if saga.status == SagaStatus::Active {
        return;
    }
    let x = scale.x(end);
    let y = lane_y(Some(&saga.state));
    let _ = write!(
        svg,
        "<g class=\"end {status}\" data-status=\"{status}\"><line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{x:.1}\" y2=\"{y2:.1}\"/>\
         <path d=\"M{x:.1} {y:.1} L{fx:.1} {fy:.1} L{x:.1} {y3:.1} Z\"/><title>{status} in {s}</title></g>",
        status = saga.status,
        y2 = y + LANE,
        fx = x + 12.0,
        fy = y + 5.0,
        y3 = y + 10.0,
        s = escape(&saga.state),
    );
}

fn draw_axis(svg: &mut String, scale: &Scale, start: DateTime<Utc>, height: f64) {
    let y = height - AXIS + 4.0;
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{LABEL}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/>",
        x2 = WIDTH - RIGHT
    );
    let ticks = 5;
    for i in 0..=ticks {
        let fraction = f64::from(i) / f64::from(ticks);
        let x = LABEL + fraction * (WIDTH - LABEL - RIGHT);
        let label = if i == 0 {
            start.format("%H:%M:%S UTC").to_string()
        } else {
            format!("+{}", human_ms(scale.at_fraction(fraction).round() as i64))
        };
        let _ = write!(
            svg,
            "<line class=\"tick\" x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{y2}\"/><text class=\"tick-label\" x=\"{x:.1}\" y=\"{ty}\">{label}</text>",
            y2 = y + 5.0,
            ty = y + 18.0,
        );
    }
}

fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms}ms"),
        ms if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms if ms < 120_000 => format!("{}s", ms / 1000),
        ms if ms < 7_200_000 => format!("{}m", ms / 60_000),
        ms if ms < 172_800_000 => format!("{}h", ms / 3_600_000),
        ms => format!("{}d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, at_ms: i64, kind: &str, state: &str) -> HistoryRow {
        HistoryRow {
            seq,
            saga_id: "p1".into(),
            at: DateTime::from_timestamp_millis(1_700_000_000_000 + at_ms).expect("time"),
            kind: kind.into(),
            state: Some(state.into()),
            to_state: None,
            call: None,
            http_status: None,
            latency_ms: None,
            request_id: None,
            error_class: None,
            error: None,
            detail: None,
        }
    }

    fn saga(status: SagaStatus, state: &str) -> SagaRecord {
        let at = DateTime::from_timestamp_millis(1_700_000_000_000).expect("time");
        SagaRecord {
            id: "p1".into(),
            workflow: "one-time-purchase".into(),
            idempotency_key: "k".into(),
            state: state.into(),
            status,
            context: "{}".into(),
            input: "{}".into(),
            customer_id: None,
            attempt: 0,
            total_attempts: 0,
            state_entered_at: at,
            next_run_at: None,
            lease_owner: None,
            lease_expires_at: None,
            version: 1,
            created_at: at,
            updated_at: at,
            last_error: None,
            wait_reason: None,
            definition: 1,
            context_schema: 1,
        }
    }

    /// The elements of `svg` with `class` (as the first class), each with its attributes.
    fn elements<'a>(svg: &'a str, class: &str) -> Vec<&'a str> {
        let needle = format!("class=\"{class}");
        svg.match_indices(&needle)
            .map(|(i, _)| {
                let tail = &svg[i..];
                &tail[..tail.find('>').unwrap_or(tail.len())]
            })
            .collect()
    }

    #[test]
    fn a_failed_purchase_shows_its_states_its_failing_call_and_its_backoff() {
        let mut history = vec![
            row(1, 0, "submitted", "Enablement"),
            row(2, 100, "claimed", "Enablement"),
        ];
        let mut advance = row(3, 300, "transition", "Enablement");
        advance.to_state = Some("Discovery".into());
        advance.call = Some("get_sku".into());
        advance.http_status = Some(200);
        advance.latency_ms = Some(40);
        history.push(advance);
        let mut retry = row(4, 600, "transition", "Discovery");
        retry.to_state = Some("Discovery".into());
        retry.call = Some("get_product".into());
        retry.http_status = Some(503);
        retry.error_class = Some("transient".into());
        history.push(retry);
        history.push(row(5, 1600, "claimed", "Discovery"));
        let mut fail = row(6, 1800, "transition", "Discovery");
        // A step that ends the purchase names its status where a state would be.
        fail.to_state = Some("failed".into());
        fail.call = Some("get_product".into());
        fail.http_status = Some(404);
        fail.error_class = Some("permanent".into());
        fail.error = Some("no such <product>".into());
        history.push(fail);
        let mut operator = row(7, 2000, "operator", "Discovery");
        operator.detail = Some("looked at it".into());
        history.push(operator);
        let svg = render(&saga(SagaStatus::Failed, "Discovery"), &history, Utc::now());
        let stays = elements(&svg, "stay");
        assert_eq!(stays.len(), 2, "{svg}");
        assert!(stays[0].contains("data-state=\"Enablement\""));
        assert!(stays[1].contains("data-state=\"Discovery\""));
        let failed = elements(&svg, "attempt failed");
        assert_eq!(failed.len(), 2, "{svg}");
        assert!(failed
            .iter()
            .all(|e| e.contains("data-call=\"get_product\"")));
        assert_eq!(elements(&svg, "attempt ok").len(), 1);
        let backoffs = elements(&svg, "wait backoff");
        assert_eq!(backoffs.len(), 1, "{svg}");
        assert!(backoffs[0].contains("data-state=\"Discovery\""));
        assert_eq!(elements(&svg, "wait queue").len(), 1);
        assert_eq!(elements(&svg, "operator").len(), 1);
        assert_eq!(elements(&svg, "end failed").len(), 1);
        assert!(
            svg.contains("no such &lt;product&gt;"),
            "errors are escaped"
        );
        assert!(!svg.contains("<product>"));
    }

    #[test]
    fn a_checkout_and_its_order_lookup_are_highlighted() {
        let mut intent = row(1, 0, "intent", "Checkout");
        intent.request_id = Some("rid-1".into());
        let mut lost = row(2, 500, "transition", "Checkout");
        lost.call = Some("checkout".into());
        lost.error_class = Some("outcome_unknown".into());
        let mut lookup = row(3, 900, "transition", "Checkout");
        lookup.call = Some("list_orders".into());
        lookup.http_status = Some(200);
        lookup.to_state = Some("OrderVisibilityPolling".into());
        let svg = render(
            &saga(SagaStatus::Active, "OrderVisibilityPolling"),
            &[intent, lost, lookup],
            DateTime::from_timestamp_millis(1_700_000_002_000).expect("time"),
        );
        assert_eq!(elements(&svg, "checkout").len(), 1, "{svg}");
        assert!(svg.contains("rid-1"));
        assert_eq!(elements(&svg, "attempt unknown").len(), 1);
        assert_eq!(elements(&svg, "attempt ok reconcile").len(), 1);
        assert!(elements(&svg, "lane money").len() == 1);
        assert!(
            elements(&svg, "end").is_empty(),
            "an active purchase has no end flag"
        );
    }

    #[test]
    fn the_axis_keeps_order_and_gives_long_waits_less_room_than_their_share() {
        let rows = [
            row(1, 0, "submitted", "A"),
            row(2, 10, "claimed", "A"),
            row(3, 20, "transition", "A"),
            row(4, 100_020, "claimed", "A"),
        ];
        let start = rows[0].at;
        let scale = Scale::new(start, rows[3].at, &rows);
        let xs: Vec<f64> = rows.iter().map(|r| scale.x(r.at)).collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "in order: {xs:?}");
        // The 100 s wait is 99.98% of the time, far less of the width; the 10 ms steps stay apart.
        let plot = WIDTH - LABEL - RIGHT;
        assert!((xs[3] - xs[2]) / plot < 0.99, "{xs:?}");
        assert!(xs[1] - xs[0] > 5.0, "{xs:?}");
        // The axis reads real times back: the inverse at each knot.
        for r in &rows {
            let ms = (r.at - start).num_milliseconds() as f64;
            let back = scale.at_fraction(scale.fraction(ms));
            assert!((back - ms).abs() < 0.5, "{ms} came back as {back}");
        }
        assert_eq!(scale.fraction(0.0), 0.0);
        assert_eq!(scale.fraction(1e12), 1.0);
    }

    #[test]
    fn an_empty_history_still_draws_the_current_state() {
        let svg = render(&saga(SagaStatus::Active, "Enablement"), &[], Utc::now());
        assert_eq!(elements(&svg, "stay").len(), 1);
    }
}
