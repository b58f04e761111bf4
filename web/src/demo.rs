//! The interactive page's session: one regime training on the browser's GPU, stepped, sampled, saved
//! and loaded by the page's controls (main.js). The page awaits each call before the next, so the
//! session is never borrowed twice.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use serde_json::{json, Value};
use tigel::checkpoint::Checkpoint;
use tigel::{Device, Result};

use crate::data::Data;
use crate::session::{fill_checkpoint, wait_losses, Session};
use crate::train::device;

/// Steps of the learning-rate schedules of a live session (the page may train past it: the rates then
/// stay at their end value).
pub const HORIZON: u32 = 3000;

struct Live {
    dev: Device,
    session: RefCell<Session>,
}

thread_local! {
    static LIVE: RefCell<Option<Rc<Live>>> = const { RefCell::new(None) };
}

fn live() -> Result<Rc<Live>> {
    LIVE.with(|l| l.borrow().clone()).ok_or_else(|| tigel::Error::invalid("demo", "no session: start one first"))
}

/// `{ok: true, ...}` with `f`'s fields, or `{ok: false, error}`.
pub fn reply(r: Result<Value>) -> String {
    match r {
        Ok(mut v) => {
            v["ok"] = json!(true);
            v.to_string()
        }
        Err(e) => json!({ "ok": false, "error": e.to_string() }).to_string(),
    }
}

fn info(l: &Live) -> Value {
    let s = l.session.borrow();
    json!({ "regime": s.regime(), "data": s.data.name(), "describe": s.describe(), "device": l.dev.note(),
            "loss_names": s.loss_names(), "step": s.step })
}

/// Starts a new session (replacing any): `regime` on `data` from `seed`, on `backend`.
pub async fn start(regime: &str, data: &str, seed: u64, backend: &str) -> Result<Value> {
    let data = Data::parse(data).map_err(|e| tigel::Error::invalid("data", e))?;
    let dev = device(backend).await?;
    let session = Session::new(&dev, regime, data, HORIZON, seed)?;
    let l = Rc::new(Live { dev, session: RefCell::new(session) });
    LIVE.with(|s| *s.borrow_mut() = Some(l.clone()));
    Ok(info(&l))
}

/// `steps` training steps, each one's losses read back: `{step, losses: [[...], ...]}`.
pub async fn train(steps: u32) -> Result<Value> {
    let l = live()?;
    let mut losses = Vec::with_capacity(steps as usize);
    for _ in 0..steps {
        l.session.borrow_mut().step(&l.dev)?;
        let reads = l.session.borrow().read_losses(&l.dev)?;
        losses.push(wait_losses(reads).await?);
    }
    Ok(json!({ "step": l.session.borrow().step, "losses": losses }))
}

/// Samples of the model as it is now (`sample::sample`).
pub async fn sample(prompt: &str, tokens: usize, seed: u64) -> Result<Value> {
    let l = live()?;
    let (ck, state) = l.session.borrow().checkpoint_parts();
    let ck = fill_checkpoint(&l.dev, ck, state).await?;
    crate::sample::sample(&ck, prompt, tokens, seed)
}

/// The session as a checkpoint file's bytes.
pub async fn save() -> Result<Vec<u8>> {
    let l = live()?;
    let (ck, state) = l.session.borrow().checkpoint_parts();
    let ck = fill_checkpoint(&l.dev, ck, state).await?;
    ck.to_bytes()
}

/// A new session from a checkpoint file's bytes (one `tigel train` wrote, or the page).
pub async fn load(name: &str, bytes: &[u8], backend: &str) -> Result<Value> {
    let ck = Checkpoint::from_bytes(Path::new(name), bytes)?;
    let dev = device(backend).await?;
    let session = Session::from_checkpoint(&dev, &ck)?;
    let l = Rc::new(Live { dev, session: RefCell::new(session) });
    LIVE.with(|s| *s.borrow_mut() = Some(l.clone()));
    Ok(info(&l))
}
