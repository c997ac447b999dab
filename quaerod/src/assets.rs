//! The dashboard's files, embedded at build time from `pages/` (in every profile), so the
//! daemon serves them from any working directory and offline. Editing a file rebuilds the
//! daemon; a file added to `pages/` is picked up at the next change of the daemon's code.

use warp::http::{Response, StatusCode};
use warp::{Filter, Rejection, Reply};

use crate::api::filters::{endpoint_with_head, no_params, one_param};

static PAGES: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/../pages");

/// A file's bytes and its content type (`; charset=utf-8` on text).
fn get(path: &str) -> Option<(&'static [u8], String)> {
    let file = PAGES.get_file(path)?;
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let text = mime.type_() == mime_guess::mime::TEXT || mime.essence_str() == "application/javascript";
    let essence = if mime.essence_str() == "application/javascript" { "text/javascript" } else { mime.essence_str() };
    let content_type = if text { format!("{essence}; charset=utf-8") } else { essence.to_string() };
    Some((file.contents(), content_type))
}

fn serve(path: &str) -> warp::reply::Response {
    match get(path) {
        Some((body, content_type)) => Response::builder()
            .header("content-type", content_type)
            .header("cache-control", "no-cache")
            // The page loads nothing from elsewhere; say so to the browser too.
            .header(
                "content-security-policy",
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
            )
            .header("x-content-type-options", "nosniff")
            .body(bytes::Bytes::from_static(body).into())
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

#[cfg(test)]
mod tests {
    use super::get;

    #[test]
    fn every_page_file_is_embedded_with_its_type() {
        for (file, ty) in [
            ("queue.html", "text/html; charset=utf-8"),
            ("queue.js", "text/javascript; charset=utf-8"),
            ("queue.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
        ] {
            let (body, content_type) = get(file).unwrap_or_else(|| panic!("{file} is not embedded"));
            let on_disk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../pages/").to_string() + file).unwrap();
            assert_eq!(body, on_disk.as_slice(), "{file}");
            assert_eq!(content_type, ty, "{file}");
        }
        for outside in ["nope.js", "../Cargo.toml", "", "/etc/passwd"] {
            assert!(get(outside).is_none(), "{outside:?}");
        }
    }
}
