//! The dashboard's files, embedded at build time from `pages/` (see `build.rs`).

use warp::http::{Response, StatusCode};
use warp::{Filter, Rejection, Reply};

use crate::api::filters::{endpoint_with_head, no_params, one_param};

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

/// GET /: a redirect to the dashboard (HEAD too, as on every page route).
#[utoipa::path(get, path = "/", tag = "daemon", responses((status = 303, description = "to `/queue`")))]
pub fn root() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    no_params(endpoint_with_head::<__path_root>())
        .map(|| warp::redirect::see_other(warp::http::Uri::from_static("/queue")).into_response())
}

/// GET /queue: the dashboard.
#[utoipa::path(get, path = "/queue", tag = "daemon",
    responses((status = 200, description = "the dashboard page", content_type = "text/html")))]
pub fn dashboard() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    no_params(endpoint_with_head::<__path_dashboard>()).map(|| serve("queue.html"))
}

/// GET /assets/{file}: the dashboard's scripts, styles and images.
#[utoipa::path(get, path = "/assets/{file}", tag = "daemon", params(("file" = String, Path)),
    responses((status = 200, description = "the file"), (status = 404, body = quaero_shared::ErrorBody)))]
pub fn asset() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    one_param(endpoint_with_head::<__path_asset>()).map(|file: String| serve(&file))
}

/// `/` → `/queue`, `/queue` → the dashboard, `/assets/<file>` → files under pages/.
pub fn routes() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    root().or(dashboard()).unify().or(asset()).unify()
}
