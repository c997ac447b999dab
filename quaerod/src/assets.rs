//! The dashboard's files, embedded at build time from `pages/` (see `build.rs`).

use warp::http::{Response, StatusCode};
use warp::{Filter, Rejection, Reply};

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("txt") | Some("md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

pub fn get(path: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

fn serve(path: &str) -> warp::reply::Response {
    match get(path) {
        Some(body) => Response::builder()
            .header("content-type", content_type(path))
            .header("cache-control", "no-cache")
            // The page loads nothing from elsewhere; say so to the browser too.
            .header(
                "content-security-policy",
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
            )
            .header("x-content-type-options", "nosniff")
            .body(body.to_vec().into())
            .expect("response"),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "application/json")
            .body(br#"{"error":"no such file"}"#.to_vec().into())
            .expect("response"),
    }
}

/// `/` → `/queue`, `/queue` → the dashboard, `/assets/<path>` → files under pages/.
pub fn routes() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    // HEAD is answered like GET (hyper drops the body), for `curl -I` and link checkers.
    let get_or_head = || warp::get().or(warp::head()).unify();
    let root = warp::path::end()
        .and(get_or_head())
        .map(|| warp::redirect::see_other(warp::http::Uri::from_static("/queue")).into_response());
    let queue = warp::path!("queue").and(get_or_head()).map(|| serve("queue.html"));
    let assets = warp::path("assets")
        .and(warp::path::tail())
        .and(get_or_head())
        .map(|tail: warp::path::Tail| serve(tail.as_str()));
    root.or(queue).unify().or(assets).unify()
}
