//! The dashboard's one network task: it owns the REST client and the WebSocket link,
//! runs the app's [`Cmd`]s concurrently, and turns every result and socket message into a
//! [`Msg`]. The UI thread only ever sends and receives on channels.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::app::{Cmd, EVENTS_SHOWN, Msg, PAGE_SIZE};
use crate::client::{Client, LogQuery, WsLink};
use quaero_shared::Order;

/// Runs until the app drops its command sender.
// Unbounded channels: commands come from keys and ticks, messages are rate-limited by the
// daemon's coalescing and by the app's own throttles, so neither side can flood the other.
pub async fn run(client: Client, mut cmds: UnboundedReceiver<Cmd>, msgs: UnboundedSender<Msg>) {
    let mut link = WsLink::new(client.ws_url(), client.token().map(str::to_string), Vec::new());
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            ev = link.next() => {
                if msgs.send(Msg::Link(ev)).is_err() {
                    return;
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(cmd) => inflight.push(perform(client.clone(), cmd)),
                None => return,
            },
            Some(msg) = inflight.next(), if !inflight.is_empty() => {
                if msgs.send(msg).is_err() {
                    return;
                }
            }
        }
    }
}

async fn perform(client: Client, cmd: Cmd) -> Msg {
    let err = |e: crate::client::ApiError| e.to_string();
    match cmd {
        Cmd::LoadManagers { status, offset } => {
            Msg::Managers(client.managers(status, PAGE_SIZE, offset).await.map_err(err))
        }
        Cmd::LoadStats => Msg::Stats(client.stats().await.map_err(err)),
        Cmd::LoadManager(id) => {
            let result = client.job(&id).await.map(Box::new).map_err(err);
            Msg::Manager { id, result }
        }
        Cmd::LoadLogs(step_id) => {
            let q = LogQuery { limit: Some(EVENTS_SHOWN), order: Some(Order::Asc), ..Default::default() };
            let result = client.logs(&step_id, &q).await.map_err(err);
            Msg::Logs { step_id, result }
        }
        Cmd::LoadOlder { step_id, before } => {
            let q = LogQuery {
                limit: Some(EVENTS_SHOWN),
                order: Some(Order::Asc),
                before: Some(before),
                ..Default::default()
            };
            let result = client.logs(&step_id, &q).await.map_err(err);
            Msg::Older { step_id, result }
        }
        Cmd::LoadDefinitions => Msg::Definitions(client.definitions().await.map(|d| d.job_definitions).map_err(err)),
        Cmd::LoadQueues => Msg::Queues(client.queues().await.map(|q| q.queues).map_err(err)),
        Cmd::Execute { definition, req } => Msg::Executed(
            client
                .execute_with(&definition, &req)
                .await
                .map(|r| match &req.delay {
                    Some(d) => format!("{} from {definition} starts in {d}", r.job_id),
                    None => format!("started {} from {definition}", r.job_id),
                })
                .map_err(err),
        ),
        Cmd::SetEnabled { definition, enabled } => Msg::ActionDone(
            client
                .set_enabled(&definition, enabled)
                .await
                .map(|d| format!("{} {}", d.id, if d.enabled { "enabled" } else { "disabled" }))
                .map_err(err),
        ),
        Cmd::SetQueuePaused { queue, paused } => Msg::ActionDone(
            client
                .set_queue_paused(&queue, paused)
                .await
                .map(|q| format!("queue {} {}", q.name, if q.paused { "paused" } else { "resumed" }))
                .map_err(err),
        ),
        Cmd::DeleteFinished(statuses) => {
            Msg::ActionDone(client.delete_finished(&statuses).await.map(|r| r.message).map_err(err))
        }
        Cmd::Cancel(id) => Msg::ActionDone(client.cancel(&id).await.map(|r| r.message).map_err(err)),
        Cmd::Delete(id) => Msg::ActionDone(
            client
                .delete(&id)
                .await
                .map(|r| format!("deleted {} ({} jobs, {} events)", r.job_id, r.deleted_jobs, r.deleted_events))
                .map_err(err),
        ),
        Cmd::Rerun(id) => Msg::ActionDone(
            client
                .rerun(&id)
                .await
                .map(|r| format!("rerun of {} started as {}", r.original_job_id, r.new_job_id))
                .map_err(err),
        ),
    }
}
