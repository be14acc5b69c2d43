//! A gateway's answer body, bounded by silence: when no part of it arrives for the
//! provider's `stream_idle_timeout_ms`, it ends with an error (the client's connection is
//! cut, so the client sees a broken answer, never a complete-looking one).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::TRACING_TARGET;
use crate::route::Route;

/// The gateway went silent mid-answer for longer than the idle limit.
#[derive(Debug, thiserror::Error)]
#[error("the gateway sent nothing for {0:?} mid-answer")]
pub(crate) struct Silent(Duration);

/// `body`, ended with [`Silent`] after `idle` without a frame. The timer is set only when
/// the body has to wait, so an answer that arrives whole costs no timer.
pub(crate) struct IdleBounded {
    body: Incoming,
    route: Arc<Route>,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last set.
    moved: bool,
}

impl IdleBounded {
    pub(crate) fn new(body: Incoming, route: Arc<Route>) -> Self {
        let idle = route.info().stream_idle_timeout();
        Self {
            body,
            route,
            idle,
            timer: None,
            moved: true,
        }
    }
}

impl Body for IdleBounded {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.moved = true;
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        let idle = this.idle;
        let new = this.timer.is_none();
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if this.moved && !new {
            timer.as_mut().reset(Instant::now() + idle);
        }
        this.moved = false;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.route.count(|c| &c.errors);
                tracing::warn!(
                    target: TRACING_TARGET,
                    provider = %this.route.id(),
                    idle_ms = this.idle.as_millis(),
                    "the gateway went silent mid-answer; the answer is cut"
                );
                Poll::Ready(Some(Err(Silent(this.idle).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
