//! The interactive loop. The terminal is restored on every way out: normal exit and errors
//! through [`run`]'s epilogue, panics through the hook `ratatui::try_init` installs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratatui::crossterm::event::{self, Event as TermEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::{App, Msg};
use crate::client::Client;

/// Redraw cadence for countdowns and ages when nothing else happens.
const TICK: Duration = Duration::from_millis(250);

pub async fn run(client: Client, color: bool) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, client, color).await;
    ratatui::restore();
    result
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn event_loop(terminal: &mut ratatui::DefaultTerminal, client: Client, color: bool) -> anyhow::Result<()> {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel();
    let net = tokio::spawn(crate::net::run(client, cmd_rx, msg_tx));

    // crossterm's blocking reader lives on its own thread so the async side never blocks.
    let (key_tx, mut key_rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if key_tx.send(ev).is_err() {
                break;
            }
        }
    });

    let mut app = App::new(color, Instant::now());
    app.update(Msg::Tick { wall_ms: wall_ms() }, Instant::now());
    for cmd in app.init() {
        let _ = cmd_tx.send(cmd);
    }
    let mut tick = tokio::time::interval(TICK);
    while !app.should_quit {
        terminal.draw(|f| f.render_widget(&app, f.area()))?;
        let first = tokio::select! {
            Some(ev) = key_rx.recv() => term_msg(ev),
            Some(m) = msg_rx.recv() => Some(m),
            _ = tick.tick() => Some(Msg::Tick { wall_ms: wall_ms() }),
        };
        // Apply everything already queued before the next draw, so bursts cost one frame.
        let mut batch: Vec<Msg> = first.into_iter().collect();
        while let Ok(m) = msg_rx.try_recv() {
            batch.push(m);
        }
        while let Ok(ev) = key_rx.try_recv() {
            batch.extend(term_msg(ev));
        }
        for msg in batch {
            for cmd in app.update(msg, Instant::now()) {
                let _ = cmd_tx.send(cmd);
            }
        }
    }
    net.abort();
    Ok(())
}

fn term_msg(ev: TermEvent) -> Option<Msg> {
    match ev {
        TermEvent::Key(k) => Some(Msg::Key(k)),
        TermEvent::Resize(..) => Some(Msg::Resize),
        _ => None,
    }
}
