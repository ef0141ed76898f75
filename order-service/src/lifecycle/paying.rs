//! Paying an order: the attempt ledger (`payments`), the call to the
//! provider outside any transaction, the one transaction that records the
//! outcome and moves the order, refunds, and the follow-up of attempts whose
//! answer never came. The rules are in the parent module's docs.
use super::*;

const FIND_PAYMENT: &str = "SELECT status, response_status, response_body FROM payments \
     WHERE order_id = $1 AND idempotency_key = $2";
const LOCK_PAYMENT: &str = "SELECT status, response_status, response_body FROM payments \
     WHERE order_id = $1 AND idempotency_key = $2 FOR UPDATE";
const START_PAYMENT: &str =
    "INSERT INTO payments (order_id, idempotency_key, amount_cents, status) \
     VALUES ($1, $2, $3, 'pending') ON CONFLICT (order_id, idempotency_key) DO NOTHING";
const FINISH_PAYMENT: &str =
    "UPDATE payments SET status = $3, payment_ref = $4, decline_reason = $5, \
     response_status = $6, response_body = $7, updated_at = now() \
     WHERE order_id = $1 AND idempotency_key = $2";
/// The payment window is a hard deadline: past it a payment loses even if
/// the expiry worker has not got to the order yet.
const MARK_PAID: &str = "UPDATE orders SET status = 'paid', payment_ref = $2, paid_at = now(), \
     updated_at = now() WHERE order_id = $1 AND status = 'created' AND expires_at > now()";
const MARK_REFUNDED: &str = "UPDATE payments SET status = 'refunded', updated_at = now() \
     WHERE order_id = $1 AND idempotency_key = $2 AND status = 'refund_pending'";
/// Unanswered attempts, oldest first; after a day they are left to an operator.
const UNANSWERED: &str = "SELECT order_id, idempotency_key FROM payments \
     WHERE status = 'pending' AND updated_at < now() - $1::bigint * interval '1 millisecond' \
       AND created_at > now() - interval '1 day' ORDER BY updated_at LIMIT 20";
const TOUCH_PENDING: &str = "UPDATE payments SET updated_at = now() \
     WHERE order_id = $1 AND idempotency_key = $2 AND status = 'pending'";
const REFUNDS_DUE: &str = "SELECT order_id, idempotency_key, payment_ref, amount_cents \
     FROM payments WHERE status = 'refund_pending' AND updated_at < now() - interval '5 seconds' \
     ORDER BY updated_at LIMIT 50";

/// A stored payment attempt.
struct Attempt {
    status: String,
    answer: Option<Answer>,
}

fn attempt(row: &QueryResult) -> Result<Attempt, DbErr> {
    let status: String = row.try_get("", "status")?;
    let code: Option<i16> = row.try_get("", "response_status")?;
    let body: Option<serde_json::Value> = row.try_get("", "response_body")?;
    let answer = match (code, body) {
        (Some(code), Some(body)) => Some(Answer {
            status: u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        }),
        _ => None,
    };
    Ok(Attempt { status, answer })
}

impl Lifecycle {
    /// Pays `order_id` for its owner. Idempotent on `key`: once an attempt
    /// has a final answer, every repeat gets exactly that answer, and the
    /// provider is never asked again.
    pub async fn pay(
        &self,
        order_id: &OrderId,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> Result<Answer, DbErr> {
        let key = key.as_str();
        let Some(order) = self
            .find(order_id)
            .await?
            .filter(|o| o.user_id == user.as_str())
        else {
            return Ok(Answer::not_found());
        };
        let id = order.order_id.clone();
        let found = self
            .db
            .query_one_raw(statement(FIND_PAYMENT, vec![id.clone().into(), key.into()]))
            .await?;
        let previous = found.as_ref().map(attempt).transpose()?;
        if let Some(answer) = previous.as_ref().and_then(|a| a.answer.clone()) {
            return Ok(answer);
        }
        let payable = order.status == OrderStatus::Created
            && order.expires_at.is_some_and(|at| at > chrono::Utc::now());
        if !payable && previous.is_none() {
            return Ok(Answer::not_payable(
                if order.status == OrderStatus::Created {
                    "past its payment window"
                } else {
                    order.status.as_str()
                },
            ));
        }
        // Payable, or an earlier attempt with this key never learnt its
        // outcome (a timeout): then the provider is asked again, idempotent on
        // the key, and money that lost answer took is settled: kept if the
        // order is still payable, refunded if not (see `settle`).
        self.db
            .execute_raw(statement(
                START_PAYMENT,
                vec![id.clone().into(), key.into(), order.amount_cents.into()],
            ))
            .await?;

        let charged = self.payments.charge(&id, order.amount_cents, key).await;
        match charged {
            Ok(reference) => self.settle(&order, key, &reference).await,
            Err(PaymentError::Declined(reason)) => self.decline(&id, key, &reason).await,
            // Unknown outcome: not final, so a repeat with the same key asks
            // the provider again (which is idempotent on the key).
            Err(PaymentError::Timeout) => Ok(Answer::error(
                StatusCode::GATEWAY_TIMEOUT,
                "payment_timeout",
                "the payment provider did not answer in time; retry with the same Idempotency-Key",
            )),
        }
    }

    /// Records a declined attempt (final: repeats get the same answer).
    async fn decline(&self, id: &str, key: &str, reason: &str) -> Result<Answer, DbErr> {
        let answer = Answer::error(
            StatusCode::PAYMENT_REQUIRED,
            "payment_declined",
            format!(
                "the payment was declined ({reason}); the order can still be paid until it expires"
            ),
        );
        let txn = self.db.begin().await?;
        if let Some(stored) = self.lock_final(&txn, id, key).await? {
            return Ok(stored);
        }
        self.finish(&txn, id, key, "declined", None, Some(reason), &answer)
            .await?;
        txn.commit().await?;
        Ok(answer)
    }

    /// Attempts that never learnt their outcome (the provider timed out and
    /// the client did not retry) and began more than `after` ago are asked
    /// again, as a retry would: a charge whose answer was lost then pays the
    /// order, or is refunded if the order is past paying. Never a charge
    /// kept for an unpaid order. Concurrent, so one tick waits at most one
    /// provider timeout. Returns how many got their outcome.
    pub async fn resolve_unanswered(&self, after: std::time::Duration) -> Result<usize, DbErr> {
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let rows = self
            .db
            .query_all_raw(statement(UNANSWERED, vec![after_ms.into()]))
            .await?;
        let attempts = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String>("", "order_id")?,
                    r.try_get::<String>("", "idempotency_key")?,
                ))
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        let outcomes =
            futures::future::join_all(attempts.iter().map(|(id, key)| self.resolve(id, key))).await;
        let mut resolved = 0;
        for outcome in outcomes {
            resolved += usize::from(outcome?);
        }
        Ok(resolved)
    }

    async fn resolve(&self, id: &str, key: &str) -> Result<bool, DbErr> {
        let Some(order) = order::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(false);
        };
        let charged = self.payments.charge(id, order.amount_cents, key).await;
        match charged {
            Ok(reference) => {
                tracing::info!(
                    order_id = id,
                    payment_ref = reference,
                    "an unanswered payment turned out charged"
                );
                self.settle(&order, key, &reference).await?;
            }
            Err(PaymentError::Declined(reason)) => {
                self.decline(id, key, &reason).await?;
            }
            Err(PaymentError::Timeout) => {
                // Still no answer: to the back of the queue, asked again later.
                self.db
                    .execute_raw(statement(TOUCH_PENDING, vec![id.into(), key.into()]))
                    .await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records a successful charge: the order becomes paid and the payment
    /// succeeded, together; or, if the order stopped being payable, the
    /// payment is refunded.
    async fn settle(
        &self,
        order: &order::Model,
        key: &str,
        reference: &str,
    ) -> Result<Answer, DbErr> {
        let id = order.order_id.as_str();
        let txn = self.db.begin().await?;
        // A concurrent request with the same key may have settled it already:
        // it got the same reference, so there is nothing to do twice.
        if let Some(stored) = self.lock_final(&txn, id, key).await? {
            return Ok(stored);
        }
        let won = txn
            .execute_raw(statement(MARK_PAID, vec![id.into(), reference.into()]))
            .await?
            .rows_affected()
            == 1;
        if !won {
            let now = order::Entity::find_by_id(id).one(&txn).await?;
            let status = now.as_ref().map_or("gone", |o| o.status.as_str());
            let answer = Answer::not_payable(if status == "created" {
                "past its payment window"
            } else {
                status
            });
            self.finish(
                &txn,
                id,
                key,
                "refund_pending",
                Some(reference),
                None,
                &answer,
            )
            .await?;
            txn.commit().await?;
            tracing::warn!(
                order_id = id,
                status,
                payment_ref = reference,
                "payment arrived after the order stopped being payable; refunding"
            );
            match self.payments.refund(reference, order.amount_cents).await {
                Ok(()) => {
                    self.db
                        .execute_raw(statement(MARK_REFUNDED, vec![id.into(), key.into()]))
                        .await?;
                }
                Err(error) => {
                    tracing::warn!(order_id = id, %error, "refund failed; the expiry worker retries it")
                }
            }
            return Ok(answer);
        }
        let paid = order::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(format!("order {id}")))?;
        let answer =
            Answer::ok(serde_json::to_value(OrderView::from(paid.clone())).unwrap_or_default());
        self.finish(&txn, id, key, "succeeded", Some(reference), None, &answer)
            .await?;
        let event = Event::OrderPaid(Paid {
            order: order_ref(&paid.order_id, &paid.sale_id, &paid.user_id, paid.quantity)?,
            payment_ref: reference.to_owned(),
            amount_cents: paid.amount_cents,
        });
        // The payment request's context: OrderPaid continues its trace.
        let traceparent = traceparent_of(&tracing::Span::current());
        outbox::enqueue(&txn, &self.topic, event, traceparent).await?;
        txn.commit().await?;
        self.wake.notify_one();
        tracing::info!(order_id = id, payment_ref = reference, "order paid");
        Ok(answer)
    }

    /// Locks the attempt's row; returns its answer if it is already final.
    async fn lock_final(
        &self,
        txn: &impl ConnectionTrait,
        order_id: &str,
        key: &str,
    ) -> Result<Option<Answer>, DbErr> {
        let row = txn
            .query_one_raw(statement(LOCK_PAYMENT, vec![order_id.into(), key.into()]))
            .await?;
        let previous = row.as_ref().map(attempt).transpose()?;
        Ok(previous
            .filter(|a| a.status != "pending")
            .and_then(|a| a.answer))
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        db: &impl ConnectionTrait,
        order_id: &str,
        key: &str,
        status: &str,
        reference: Option<&str>,
        decline_reason: Option<&str>,
        answer: &Answer,
    ) -> Result<(), DbErr> {
        db.execute_raw(statement(
            FINISH_PAYMENT,
            vec![
                order_id.into(),
                key.into(),
                status.into(),
                reference.map(str::to_owned).into(),
                decline_reason.map(str::to_owned).into(),
                i16::try_from(answer.status.as_u16()).unwrap_or(500).into(),
                answer.body.clone().into(),
            ],
        ))
        .await
        .map(drop)
    }

    /// Retries refunds that failed when they were first attempted.
    pub async fn retry_refunds(&self) -> Result<usize, DbErr> {
        let due = self
            .db
            .query_all_raw(statement(REFUNDS_DUE, vec![]))
            .await?;
        let mut done = 0;
        for row in &due {
            let order_id: String = row.try_get("", "order_id")?;
            let key: String = row.try_get("", "idempotency_key")?;
            let reference: String = row.try_get("", "payment_ref")?;
            let amount: i64 = row.try_get("", "amount_cents")?;
            match self.payments.refund(&reference, amount).await {
                Ok(()) => {
                    self.db
                        .execute_raw(statement(MARK_REFUNDED, vec![order_id.into(), key.into()]))
                        .await?;
                    done += 1;
                }
                Err(error) => {
                    tracing::warn!(payment_ref = reference, %error, "refund failed again")
                }
            }
        }
        Ok(done)
    }
}
