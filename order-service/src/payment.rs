//! The payment-provider boundary: a trait, the fake provider behind it, and
//! [`Payments`], which puts a deadline on every call to it.
//!
//! The contract a real provider must meet (Stripe, Adyen and the like do):
//! a charge is idempotent on its idempotency key, so repeating a charge whose
//! answer was lost never takes the money twice; a refund is idempotent on the
//! payment reference.
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::configuration::{PaymentMode, PaymentSettings};

/// One charge request, as the provider sees it.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub order_id: &'a str,
    pub amount_cents: i64,
    /// The provider's idempotency key: [`provider_key`] of the order and the
    /// client's key. Real providers scope keys per merchant account, not per
    /// order, so the client's key alone would let two orders paid with one
    /// key share a charge.
    pub idempotency_key: &'a str,
    /// The client's `Idempotency-Key`, unchanged. Only the fake provider
    /// reads it (its scripted test keys, like a provider's test cards).
    pub client_key: &'a str,
}

/// The key sent to the provider for `order_id` paid with the client's `client_key`:
/// stable (a repeat is the same charge), distinct per order, and fixed length.
pub fn provider_key(order_id: &str, client_key: &str) -> String {
    let name = format!("seckill/{order_id}/{client_key}");
    format!(
        "seckill-{}",
        Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()).simple()
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The provider refused; nothing was charged. Another attempt may succeed.
    #[error("payment declined: {0}")]
    Declined(String),
    /// No answer in time: the outcome is unknown until the same request is repeated.
    #[error("the payment provider did not answer in time")]
    Timeout,
}

pub trait PaymentProvider: Send + Sync {
    /// Takes the money; returns the provider's payment reference.
    fn charge<'a>(&'a self, charge: Charge<'a>) -> BoxFuture<'a, Result<String, PaymentError>>;
    /// Gives back a payment taken by [`PaymentProvider::charge`].
    fn refund<'a>(
        &'a self,
        payment_ref: &'a str,
        amount_cents: i64,
    ) -> BoxFuture<'a, Result<(), PaymentError>>;
}

/// The provider with a deadline on each call: whatever the provider does, a
/// request thread never waits longer than `timeout`.
pub struct Payments {
    provider: Box<dyn PaymentProvider>,
    timeout: Duration,
}

impl Payments {
    pub fn new(provider: Box<dyn PaymentProvider>, timeout: Duration) -> Self {
        Self { provider, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Charges `amount_cents` for `order_id`, idempotent on the client's key.
    pub async fn charge(
        &self,
        order_id: &str,
        amount_cents: i64,
        client_key: &str,
    ) -> Result<String, PaymentError> {
        let key = provider_key(order_id, client_key);
        let charge = Charge {
            order_id,
            amount_cents,
            idempotency_key: &key,
            client_key,
        };
        tokio::time::timeout(self.timeout, self.provider.charge(charge))
            .await
            .unwrap_or(Err(PaymentError::Timeout))
    }

    pub async fn refund(&self, payment_ref: &str, amount_cents: i64) -> Result<(), PaymentError> {
        tokio::time::timeout(
            self.timeout,
            self.provider.refund(payment_ref, amount_cents),
        )
        .await
        .unwrap_or(Err(PaymentError::Timeout))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeMode {
    Succeed,
    Decline,
    /// Never answers, and charges nothing.
    Timeout,
    /// Takes the money but the first answer is lost (never arrives); a
    /// repeat with the same key gets the reference, as from a real provider.
    LostAnswer,
}

impl From<PaymentMode> for FakeMode {
    fn from(mode: PaymentMode) -> Self {
        match mode {
            PaymentMode::Succeed => Self::Succeed,
            PaymentMode::Decline => Self::Decline,
            PaymentMode::Timeout => Self::Timeout,
        }
    }
}

/// Idempotency keys with these prefixes get that behaviour whatever the mode
/// (like a provider's test card numbers): tests script a decline, then a success.
pub const DECLINE_KEY_PREFIX: &str = "fake-decline";
pub const TIMEOUT_KEY_PREFIX: &str = "fake-timeout";
pub const LOST_ANSWER_KEY_PREFIX: &str = "fake-lost-answer";

/// An in-memory provider for development and tests. Idempotent like a real
/// one: the same key always gets the same reference (whatever the order, as
/// a real provider scopes keys per merchant account), and money is taken
/// once per reference.
pub struct FakePaymentProvider {
    mode: FakeMode,
    latency: Duration,
    /// payment reference -> amount, of every successful charge.
    charges: Mutex<HashMap<String, i64>>,
    refunds: Mutex<HashSet<String>>,
}

impl FakePaymentProvider {
    pub fn new(mode: FakeMode, latency: Duration) -> Self {
        Self {
            mode,
            latency,
            charges: Mutex::new(HashMap::new()),
            refunds: Mutex::new(HashSet::new()),
        }
    }

    pub fn from_settings(settings: &PaymentSettings) -> Self {
        Self::new(FakeMode::from(settings.mode), settings.latency)
    }

    fn mode_for(&self, key: &str) -> FakeMode {
        if key.starts_with(DECLINE_KEY_PREFIX) {
            FakeMode::Decline
        } else if key.starts_with(TIMEOUT_KEY_PREFIX) {
            FakeMode::Timeout
        } else if key.starts_with(LOST_ANSWER_KEY_PREFIX) {
            FakeMode::LostAnswer
        } else {
            self.mode
        }
    }

    /// Takes the charge once per reference; `true` when this call took it.
    fn take(&self, charge: &Charge<'_>) -> (String, bool) {
        let reference = fake_reference(charge.idempotency_key);
        let mut charges = self.charges.lock().unwrap_or_else(|p| p.into_inner());
        let first = !charges.contains_key(&reference);
        charges
            .entry(reference.clone())
            .or_insert(charge.amount_cents);
        (reference, first)
    }

    /// Charges taken and not refunded, in total.
    pub fn balance_cents(&self) -> i64 {
        let charges = self.charges.lock().unwrap_or_else(|p| p.into_inner());
        let refunds = self.refunds.lock().unwrap_or_else(|p| p.into_inner());
        charges
            .iter()
            .filter(|(r, _)| !refunds.contains(*r))
            .map(|(_, a)| a)
            .sum()
    }
}

/// Same key, same reference: the provider's idempotency.
pub fn fake_reference(key: &str) -> String {
    format!(
        "fakepay_{}",
        Uuid::new_v5(&Uuid::NAMESPACE_URL, key.as_bytes()).simple()
    )
}

impl PaymentProvider for FakePaymentProvider {
    fn charge<'a>(&'a self, charge: Charge<'a>) -> BoxFuture<'a, Result<String, PaymentError>> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            match self.mode_for(charge.client_key) {
                FakeMode::Decline => Err(PaymentError::Declined("card_declined".into())),
                FakeMode::Timeout => std::future::pending().await,
                FakeMode::Succeed => Ok(self.take(&charge).0),
                FakeMode::LostAnswer => match self.take(&charge) {
                    (reference, false) => Ok(reference),
                    (_, true) => std::future::pending().await,
                },
            }
        })
    }

    fn refund<'a>(
        &'a self,
        payment_ref: &'a str,
        _amount_cents: i64,
    ) -> BoxFuture<'a, Result<(), PaymentError>> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            self.refunds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(payment_ref.to_owned());
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge<'a>(key: &'a str) -> Charge<'a> {
        Charge {
            order_id: "s1.0190",
            amount_cents: 500,
            idempotency_key: key,
            client_key: key,
        }
    }

    #[tokio::test]
    async fn the_same_key_gets_the_same_reference_and_is_charged_once() {
        let fake = FakePaymentProvider::new(FakeMode::Succeed, Duration::ZERO);
        let a = fake.charge(charge("k1")).await.unwrap();
        let b = fake.charge(charge("k1")).await.unwrap();
        let c = fake.charge(charge("k2")).await.unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(fake.balance_cents(), 1000);
        fake.refund(&c, 500).await.unwrap();
        fake.refund(&c, 500).await.unwrap();
        assert_eq!(fake.balance_cents(), 500);
    }

    #[tokio::test]
    async fn key_prefixes_override_the_mode_and_timeouts_are_bounded() {
        let payments = Payments::new(
            Box::new(FakePaymentProvider::new(FakeMode::Succeed, Duration::ZERO)),
            Duration::from_millis(20),
        );
        assert!(matches!(
            payments.charge("s1.0190", 500, "fake-decline-1").await,
            Err(PaymentError::Declined(_))
        ));
        assert_eq!(
            payments.charge("s1.0190", 500, "fake-timeout-1").await,
            Err(PaymentError::Timeout)
        );
        assert!(payments.charge("s1.0190", 500, "plain").await.is_ok());
        // The money is taken, the answer lost; the repeat learns the reference.
        assert_eq!(
            payments.charge("s1.0190", 500, "fake-lost-answer-1").await,
            Err(PaymentError::Timeout)
        );
        assert!(payments
            .charge("s1.0190", 500, "fake-lost-answer-1")
            .await
            .is_ok());
    }

    /// A provider scopes keys per merchant account: two orders paid with the
    /// same client key are two charges, because the key sent is per order.
    #[tokio::test]
    async fn one_client_key_on_two_orders_is_two_charges() {
        let payments = Payments::new(
            Box::new(FakePaymentProvider::new(FakeMode::Succeed, Duration::ZERO)),
            Duration::from_millis(200),
        );
        let a = payments
            .charge("s1.order-a", 500, "same-key")
            .await
            .unwrap();
        let b = payments
            .charge("s1.order-b", 700, "same-key")
            .await
            .unwrap();
        assert_ne!(
            a, b,
            "the second order must not reuse the first one's charge"
        );
        let again = payments
            .charge("s1.order-a", 500, "same-key")
            .await
            .unwrap();
        assert_eq!(a, again, "a repeat is the same charge");
        assert_ne!(
            provider_key("s1.order-a", "k"),
            provider_key("s1.order-b", "k")
        );
    }
}
