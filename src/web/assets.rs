//! The console's stylesheet and script, compiled into the binary: no CDN, nothing fetched at
//! run time, the same bytes for every page.

use hyper::StatusCode;

use super::{reply, Reply};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

pub fn serve(name: &str) -> Reply {
    match name {
        "console.css" => reply(StatusCode::OK, "text/css; charset=utf-8", CSS),
        "console.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", JS),
        _ => super::console::not_found(&format!("/assets/{name}")),
    }
}
