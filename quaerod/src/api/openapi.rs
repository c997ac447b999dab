//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` and the wire
//! types' `ToSchema`; served at `GET /api/openapi.json` and checked in as
//! `docs/openapi.json` (a test fails when the two differ).

use std::sync::OnceLock;

use quaero_shared::{ClientMessage, ServerMessage};
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::handlers;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Quaero",
        description = "quaerod's REST API. Step events are fetched here; `/ws` only sends small refresh \
            triggers (`ServerMessage`), and takes `ClientMessage`. The prose contract is in docs/.",
        license(name = "MIT")
    ),
    paths(
        handlers::health,
        handlers::openapi,
        handlers::stats,
        handlers::list_jobs,
        handlers::get_job,
        handlers::logs,
        handlers::cancel,
        handlers::delete_job,
        handlers::delete_jobs,
        handlers::rerun,
        handlers::list_definitions,
        handlers::put_definition,
        handlers::get_definition,
        handlers::delete_definition,
        handlers::execute,
        handlers::enable_definition,
        handlers::disable_definition,
        handlers::queues,
        handlers::pause_queue,
        handlers::resume_queue,
        handlers::metrics,
        crate::ws::route,
        crate::assets::root,
        crate::assets::dashboard,
        crate::assets::asset,
    ),
    components(schemas(ServerMessage, ClientMessage)),
    modifiers(&BearerToken),
    tags(
        (name = "jobs", description = "Managers, steps, child jobs and their events"),
        (name = "definitions", description = "Job definitions and running them"),
        (name = "queues", description = "Named queues: their slots, pause and resume"),
        (name = "daemon", description = "Health, metrics, this document, the WebSocket and the dashboard"),
    )
)]
pub struct ApiDoc;

/// The `bearer` scheme the operations name: needed only when the daemon has an `auth_token`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`[server] auth_token`; without one configured, no token is needed"))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON with a final newline, as checked in.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = <ApiDoc as utoipa::OpenApi>::openapi().to_pretty_json().expect("the document serialises");
        s.push('\n');
        s
    })
}
