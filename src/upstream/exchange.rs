//! Getting a connection home and one exchange on it: an idle pooled
//! connection or a place under the cap (`limit.rs`, fair between clients),
//! a new connection when none is idle, and the answer's body lent the
//! connection until it is read (`lent.rs`).

use http::{Request, Response};
use hyper_util::rt::TokioIo;

use super::lent::{Lease, UpstreamBody};
use super::limit::{ConnPermit, Deadline};
use super::pool::PooledConn;
use super::{Acquired, Direct, Failure, Upstream};
use crate::body::Body;
use crate::error::Busy;

impl Upstream {
    /// An idle pooled connection made for `pooled` (the address epoch; None
    /// for a connection of its own), or the permit to open a new one,
    /// waiting up to `deadline`. An idle connection that cannot be used is
    /// closed to make room.
    pub(super) async fn acquire(
        &self,
        pooled: Option<u64>,
        deadline: &Deadline,
    ) -> Result<Acquired, Busy> {
        // While others wait, a request takes a ticket and its turn rather
        // than what comes free (`limit.rs`: fair between clients).
        let mut ticket = None;
        loop {
            let my_turn = match &ticket {
                None => !self.limit.anyone_waiting(),
                Some(ticket) => self.limit.at_turn(ticket),
            };
            if my_turn {
                if let Some(conn) = pooled.and_then(|epoch| self.pool.checkout(epoch)) {
                    return Ok(Acquired::Pooled(conn));
                }
                if let Some(permit) = self.limit.try_conn() {
                    return Ok(Acquired::Permit(permit));
                }
                if self.pool.evict_oldest() {
                    continue;
                }
            }
            let ticket = match &mut ticket {
                Some(ticket) => ticket,
                None => ticket.insert(self.limit.ticket(deadline.client())?),
            };
            if let Some(permit) = self
                .limit
                .wait(ticket, &self.pool.returned, deadline)
                .await?
            {
                return Ok(Acquired::Permit(permit));
            }
        }
    }

    /// One exchange: on the pooled connection, or on a new one. A request a
    /// pooled connection closed before taking goes out again on a new
    /// connection (in the dead one's place under the cap), whatever its
    /// method: nothing of it was sent.
    pub(super) async fn exchange(
        &self,
        direct: &Direct,
        request: Request<Body>,
        acquired: Acquired,
        epoch: u64,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let mut request = request;
        let permit = match acquired {
            Acquired::Permit(permit) => permit,
            Acquired::Pooled(mut conn) => match conn.sender.try_send_request(request).await {
                Ok(response) => return Ok(self.lend(response, conn, epoch)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => {
                        request = unsent;
                        conn.permit
                    }
                    None => return Err(Failure::Exchange(error.into_error())),
                },
            },
        };
        // Boxed: connecting is rare, and its future would size every exchange.
        let mut conn = Box::pin(self.connect(direct, permit)).await?;
        let response = conn
            .sender
            .send_request(request)
            .await
            .map_err(Failure::Exchange)?;
        Ok(self.lend(response, conn, epoch))
    }

    fn lend(
        &self,
        response: Response<hyper::body::Incoming>,
        conn: PooledConn,
        epoch: u64,
    ) -> Response<UpstreamBody> {
        let pool = self.pool.clone();
        response.map(|body| UpstreamBody::new(body, Lease { conn, epoch, pool }))
    }

    /// A new keep-alive connection in `permit`'s place; its connection task
    /// runs on its own until the upstream or drawbridge closes it.
    async fn connect(&self, direct: &Direct, permit: ConnPermit) -> Result<PooledConn, Failure> {
        let stream = direct
            .dial_io(self.connect_timeout)
            .await
            .map_err(Failure::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::Exchange)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(PooledConn { sender, permit })
    }
}
