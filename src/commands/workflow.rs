//! `pcsaga workflow validate FILE`.

use std::path::Path;

use crate::exit::{Exit, Failed};
use crate::output::{print, print_json, Table};

pub fn validate(file: &Path, json: bool) -> Result<Exit, Failed> {
    let policies = crate::app::policies(Some(file))?;
    if json {
        print_json(&serde_json::to_value(&policies).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&[
        "STATE",
        "RETRY (first, x, max, attempts, jitter, then)",
        "POLL (every, deadline, then)",
    ]);
    for state in pcsaga_purchase::STATE_NAMES {
        let p = policies.get(state);
        let r = &p.retry;
        table.row(vec![
            (*state).to_owned(),
            format!(
                "{}, x{}, {}, {}, ±{:.0}%, {:?}",
                pcsaga_engine::schedule::human(r.initial_interval),
                r.multiplier,
                pcsaga_engine::schedule::human(r.max_interval),
                r.max_attempts,
                r.jitter * 100.0,
                r.on_exhausted
            )
            .to_lowercase(),
            format!(
                "{}, {}, {:?}",
                pcsaga_engine::schedule::human(p.poll.interval),
                pcsaga_engine::schedule::human(p.poll.deadline),
                p.poll.on_deadline
            )
            .to_lowercase(),
        ]);
    }
    print(&format!(
        "{} is valid\n\n{}",
        file.display(),
        table.render()
    ));
    Ok(Exit::Ok)
}
