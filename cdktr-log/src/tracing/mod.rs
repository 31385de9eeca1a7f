//! A [`tracing_subscriber::Layer`] that publishes `tracing` events as log
//! lines (the `tracing` feature), so that code which already logs with
//! `tracing::info!` (or `log`, through `tracing-log`) reaches the bus
//! without a line changed.
//!
//! - **Context from spans**: a span with any of the fields
//!   `workflow_id`, `workflow_name`, `workflow_instance_id`, `task_name`,
//!   `task_instance_id` sets them for every event inside it; the innermost
//!   span that sets a field wins, values given later with `Span::record`
//!   count, and an event's own such fields win over its spans'.
//! - **Outside any workflow** (no `workflow_id` in scope): an event is
//!   skipped, or written with a default context ([`Outside`]); counted
//!   either way.
//! - **Event → line**: the level as is; the payload is the message, then
//!   the other fields as `key=value` (logfmt quoting), optionally the
//!   target; the line's time is the event's.
//! - **Never blocks the caller** beyond the publisher's own bounded
//!   hand-over; lines it drops are counted as it counts them, and the
//!   [`LayerGuard`] reports them when it shuts the publisher down.
//! - Filtering is `tracing`'s own (level filters, per-layer filters):
//!   a disabled event never reaches the layer.
//!
//! # Install it
//!
//! ```no_run
//! use cdktr_log::{BusConfig, LogPublisher};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let publisher = LogPublisher::connect(&BusConfig::from_env()?)?;
//! let (layer, _guard) = cdktr_log::tracing::layer(publisher).build();
//! tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
//!
//! let run = tracing::info_span!("workflow", workflow_id = "etl", workflow_instance_id = "etl-1");
//! let _in_run = run.enter();
//! tracing::info!(rows = 10, "extracted");   // payload: `extracted rows=10`
//! # Ok::<(), cdktr_log::Error>(())
//! ```
//!
//! # Bridge `log`
//!
//! Crates that log through `log` reach the layer through `tracing-log`:
//! `tracing_log::LogTracer::init()` once at start turns each `log` record
//! into a `tracing` event (its `log.*` fields are left out of the payload).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::message::{now_ms, Level};
use crate::publisher::{Handle, LogPublisher, PublisherStats, TaskContext};
use crate::Error;

mod fields;

use fields::{Context, Payload};

/// What the layer does with an event outside any workflow (no
/// `workflow_id` in its spans or fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Outside {
    /// Not published (counted in [`LayerStats::skipped`]). The default.
    #[default]
    Skip,
    /// Published with this context (counted in
    /// [`LayerStats::defaulted`]); its fields also fill those an event
    /// inside a workflow lacks.
    Default(TaskContext),
}

/// Starts building a layer publishing through `publisher`, acknowledged or
/// best effort as it was built.
pub fn layer(publisher: LogPublisher) -> LayerBuilder {
    LayerBuilder {
        publisher,
        outside: Outside::Skip,
        target: false,
    }
}

/// Configures the layer; [`build`](Self::build) makes it and its guard.
#[derive(Debug)]
#[must_use = "a builder does nothing until `build`"]
pub struct LayerBuilder {
    publisher: LogPublisher,
    outside: Outside,
    target: bool,
}

impl LayerBuilder {
    /// Events outside any workflow are published with this context.
    pub fn default_context(mut self, context: TaskContext) -> Self {
        self.outside = Outside::Default(context);
        self
    }

    /// What happens to events outside any workflow.
    pub fn outside(mut self, outside: Outside) -> Self {
        self.outside = outside;
        self
    }

    /// Adds `target=…` (the event's module path, by default) to each
    /// payload.
    pub fn with_target(mut self, yes: bool) -> Self {
        self.target = yes;
        self
    }

    /// The layer, for `registry().with(layer)`, and the guard that shuts
    /// the publisher down.
    pub fn build(self) -> (CdktrLayer, LayerGuard) {
        let inner = Arc::new(Inner {
            handle: self.publisher.handle(),
            outside: self.outside,
            target: self.target,
            counts: Counts::default(),
            recorded: AtomicU64::new(0),
        });
        let guard = LayerGuard {
            publisher: Some(self.publisher),
            inner: inner.clone(),
        };
        (CdktrLayer { inner }, guard)
    }
}

/// The layer. Cheap to clone.
#[derive(Clone)]
pub struct CdktrLayer {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    outside: Outside,
    target: bool,
    counts: Counts,
    /// Context fields recorded after their spans were created, so far.
    recorded: AtomicU64,
}

#[derive(Default)]
struct Counts {
    published: AtomicU64,
    skipped: AtomicU64,
    defaulted: AtomicU64,
    oversize: AtomicU64,
    closed: AtomicU64,
}

/// The layer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Events handed to the publisher.
    pub published: u64,
    /// Events outside any workflow, not published ([`Outside::Skip`]).
    pub skipped: u64,
    /// Events outside any workflow published with the default context.
    pub defaulted: u64,
    /// Events whose payload was over the publisher's message limit.
    pub oversize: u64,
    /// Events after the publisher shut down.
    pub closed: u64,
}

impl CdktrLayer {
    /// The counters as of now.
    pub fn stats(&self) -> LayerStats {
        self.inner.stats()
    }
}

impl Inner {
    fn stats(&self) -> LayerStats {
        let c = &self.counts;
        LayerStats {
            published: c.published.load(Relaxed),
            skipped: c.skipped.load(Relaxed),
            defaulted: c.defaulted.load(Relaxed),
            oversize: c.oversize.load(Relaxed),
            closed: c.closed.load(Relaxed),
        }
    }
}

impl<S> Layer<S> for CdktrLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut context = Context::default();
        attrs.record(&mut context);
        if context.0.iter().any(Option::is_some) {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(context);
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut recorded = Context::default();
        values.record(&mut recorded);
        if recorded.0.iter().all(Option::is_none) {
            return;
        }
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<Context>() {
            Some(context) => {
                for (slot, value) in context.0.iter_mut().zip(recorded.0) {
                    if value.is_some() {
                        *slot = value;
                    }
                }
            }
            None => extensions.insert(recorded),
        }
        // Every span's resolved context may include this one's.
        self.inner.recorded.fetch_add(1, Relaxed);
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let timestamp_ms = now_ms();
        let inner = &self.inner;
        let mut payload = Payload::default();
        event.record(&mut payload);
        let own = std::mem::take(&mut payload.context);
        // The scope's context, resolved once per span and kept in it until
        // a context field is recorded anywhere.
        let generation = inner.recorded.load(Relaxed);
        let scoped = match ctx.event_span(event) {
            Some(span) => {
                let cached = span
                    .extensions()
                    .get::<Resolved>()
                    .filter(|r| r.generation == generation)
                    .map(|r| r.context.clone());
                cached.unwrap_or_else(|| {
                    let mut found: [Option<String>; 5] = Default::default();
                    for s in span.scope() {
                        if let Some(c) = s.extensions().get::<Context>() {
                            for (slot, value) in found.iter_mut().zip(&c.0) {
                                if slot.is_none() {
                                    slot.clone_from(value);
                                }
                            }
                        }
                    }
                    let context = inner.complete(found);
                    span.extensions_mut().replace(Resolved {
                        generation,
                        context: context.clone(),
                    });
                    context
                })
            }
            None => inner.complete(Default::default()),
        };
        // An event's own context fields win over its spans'.
        let context = if own.0.iter().any(Option::is_some) {
            let mut found = own.0;
            let (have, c) = (&scoped.1, &scoped.0);
            let fallback = [
                &c.workflow_id,
                &c.workflow_name,
                &c.workflow_instance_id,
                &c.task_name,
                &c.task_instance_id,
            ];
            // Outside a workflow the spans' strings are only the default's,
            // which `complete` fills in anyway.
            if *have {
                for (slot, value) in found.iter_mut().zip(fallback) {
                    if slot.is_none() {
                        *slot = Some(value.clone());
                    }
                }
            }
            inner.complete(found)
        } else {
            scoped
        };
        let (context, in_workflow) = context;
        if !in_workflow {
            match inner.outside {
                Outside::Skip => {
                    inner.counts.skipped.fetch_add(1, Relaxed);
                    return;
                }
                Outside::Default(_) => {
                    inner.counts.defaulted.fetch_add(1, Relaxed);
                }
            }
        }
        let meta = event.metadata();
        let text = payload.into_text(inner.target.then(|| meta.target()));
        let counter = match inner.handle.publish(context, level(*meta.level()), timestamp_ms, text) {
            Ok(()) => &inner.counts.published,
            Err(Error::Oversize { .. }) => &inner.counts.oversize,
            Err(_) => &inner.counts.closed,
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// A span's context with its ancestors' and the default filled in, as of
/// a count of context fields recorded.
struct Resolved {
    generation: u64,
    context: (Arc<TaskContext>, bool),
}

impl Inner {
    fn default(&self) -> Option<&TaskContext> {
        match &self.outside {
            Outside::Default(d) => Some(d),
            Outside::Skip => None,
        }
    }

    /// The line's context from the fields found, the default filling the
    /// rest; and whether it is inside a workflow (a `workflow_id` found).
    fn complete(&self, found: [Option<String>; 5]) -> (Arc<TaskContext>, bool) {
        let in_workflow = found[0].is_some();
        let d = self.default();
        let [workflow_id, workflow_name, workflow_instance_id, task_name, task_instance_id] = found;
        let or = |v: Option<String>, f: fn(&TaskContext) -> &String| {
            v.or_else(|| d.map(|c| f(c).clone())).unwrap_or_default()
        };
        let context = TaskContext {
            workflow_id: or(workflow_id, |c| &c.workflow_id),
            workflow_name: or(workflow_name, |c| &c.workflow_name),
            workflow_instance_id: or(workflow_instance_id, |c| &c.workflow_instance_id),
            task_name: or(task_name, |c| &c.task_name),
            task_instance_id: or(task_instance_id, |c| &c.task_instance_id),
        };
        (Arc::new(context), in_workflow)
    }
}

fn level(l: tracing_core::Level) -> Level {
    match l {
        tracing_core::Level::TRACE => Level::Trace,
        tracing_core::Level::DEBUG => Level::Debug,
        tracing_core::Level::INFO => Level::Info,
        tracing_core::Level::WARN => Level::Warn,
        _ => Level::Error,
    }
}

/// Owns the publisher: [`shutdown`](Self::shutdown), or dropping it,
/// delivers what is queued within the publisher's shutdown timeout, stops
/// it, and reports what was dropped. Keep it alive for as long as the
/// program logs (in `main`, like tracing-appender's `WorkerGuard`); events
/// after it are counted in [`LayerStats::closed`].
#[must_use = "dropping the guard shuts the publisher down at once"]
pub struct LayerGuard {
    publisher: Option<LogPublisher>,
    inner: Arc<Inner>,
}

/// What a layer did, reported when its guard shuts the publisher down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerReport {
    /// The layer's counters.
    pub layer: LayerStats,
    /// The publisher's final counters (its `dropped` lines among them).
    pub publisher: PublisherStats,
}

impl LayerReport {
    /// Whether any event failed to become a delivered line.
    pub fn lost_any(&self) -> bool {
        self.publisher.dropped > 0 || self.layer.oversize > 0 || self.layer.closed > 0
    }
}

impl LayerGuard {
    /// The layer's counters as of now.
    pub fn stats(&self) -> LayerStats {
        self.inner.stats()
    }

    /// Delivers what is queued and stops the publisher (within its
    /// shutdown timeout); what came of every event.
    ///
    /// # Errors
    /// [`Error::Closed`] if the publisher's thread had died.
    pub fn shutdown(mut self) -> crate::Result<LayerReport> {
        self.stop()
    }

    fn stop(&mut self) -> crate::Result<LayerReport> {
        let Some(publisher) = self.publisher.take() else {
            return Ok(LayerReport {
                layer: self.inner.stats(),
                publisher: PublisherStats::default(),
            });
        };
        let publisher = publisher.shutdown()?;
        Ok(LayerReport {
            layer: self.inner.stats(),
            publisher,
        })
    }
}

impl Drop for LayerGuard {
    fn drop(&mut self) {
        if self.publisher.is_none() {
            return;
        }
        // The layer may be the program's only log: say it on stderr.
        match self.stop() {
            Ok(r) if r.lost_any() => eprintln!(
                "cdktr-log: {} event(s) published, {} dropped by the publisher, {} over the size limit, {} after \
                 shutdown",
                r.layer.published, r.publisher.dropped, r.layer.oversize, r.layer.closed
            ),
            Ok(_) => {}
            Err(e) => eprintln!("cdktr-log: the tracing layer's publisher: {e}"),
        }
    }
}

impl std::fmt::Debug for CdktrLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdktrLayer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LayerGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerGuard")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
