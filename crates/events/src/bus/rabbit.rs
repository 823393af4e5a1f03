//! The RabbitMQ bus.
//!
//! Topology, declared idempotently by whoever connects:
//! - `{ns}.events`: the topic exchange; the routing key is the event type.
//! - `{ns}.events.log`: a stream bound with `#`, so every event is kept and can be replayed from
//!   any offset (`tail`).
//! - per consumer `C`: the quorum queue `{ns}.C` bound to its types, with a single active
//!   consumer so that one process at a time applies its events in order; delayed-retry queues
//!   `{ns}.C.retry.{delay}` (a message TTL, then dead-lettered back to `{ns}.C`); and the parking
//!   lot `{ns}.C.parked`, a classic queue (listing it requeues, which must not count as a
//!   delivery attempt the way a quorum queue's delivery limit would).
//!
//! A failed event is republished to the retry queue of its next delay and acknowledged; later
//! events of its subject are deferred behind it (sent round the shortest retry queue) until it
//! has been applied or parked. Republishing before acknowledging means a crash in between gives a
//! duplicate, never a loss; the inbox makes duplicates harmless.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{BusConfig, BusError, Outgoing, Parked, Subscription, TailFrom, record_consumed, topic_matches};
use crate::CloudEvent;

const CONTENT_TYPE: &str = "application/cloudevents+json";
/// Failures so far; absent on a first delivery.
const ATTEMPT: &str = "x-emporium-attempt";
/// Set on an event sent round the retry queue only to keep it behind a failing one.
const DEFERRED: &str = "x-emporium-deferred";
const ERROR: &str = "x-emporium-error";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RabbitBus {
    config: BusConfig,
    /// One confirm-mode channel for publishing, opened on first use and after a failure.
    publisher: Mutex<Option<(Connection, Channel)>>,
}

/// Per-subject state of one consumer: the event being retried, and the later ones waiting
/// behind it, in their order. Deferred events come back round the retry queue in no reliable
/// order relative to each other, so only the one at the head of the line may be applied.
#[derive(Debug, Default)]
struct SubjectState {
    failing: Option<Uuid>,
    deferred: std::collections::VecDeque<Uuid>,
}

impl RabbitBus {
    pub fn new(config: BusConfig) -> Self {
        Self { config, publisher: Mutex::new(None) }
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    fn exchange(&self) -> String {
        format!("{}.events", self.config.namespace)
    }

    fn log_stream(&self) -> String {
        format!("{}.events.log", self.config.namespace)
    }

    fn queue(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.config.namespace)
    }

    fn retry_queue(&self, consumer: &str, delay: Duration) -> String {
        format!("{}.{consumer}.retry.{}ms", self.config.namespace, delay.as_millis())
    }

    fn parked_queue(&self, consumer: &str) -> String {
        format!("{}.{consumer}.parked", self.config.namespace)
    }

    async fn connect(&self, purpose: &str) -> Result<Connection, BusError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("{}-{purpose}", self.config.namespace)));
        match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.config.url, properties)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(BusError::Unavailable(format!("no connection within {CONNECT_TIMEOUT:?}"))),
        }
    }

    /// The exchange and the log stream: what publishing needs.
    async fn declare_core(&self, channel: &Channel) -> Result<(), BusError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(self.exchange().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(unavailable)?;
        let mut stream_args = FieldTable::default();
        stream_args.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
        stream_args.insert(
            "x-max-age".into(),
            AMQPValue::LongString(format!("{}s", self.config.log_retention.as_secs().max(1)).into()),
        );
        let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(self.log_stream().into(), durable_queue, stream_args).await.map_err(unavailable)?;
        channel
            .queue_bind(
                self.log_stream().into(),
                self.exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A consumer's queue, its retry queues and its parking lot.
    async fn declare_consumer(&self, channel: &Channel, subscription: &Subscription) -> Result<(), BusError> {
        let consumer = &subscription.consumer;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let mut main = FieldTable::default();
        main.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        main.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let expires = subscription.expires_after.map(|idle| AMQPValue::LongLongInt(idle.as_millis() as i64));
        if let Some(expires) = &expires {
            main.insert("x-expires".into(), expires.clone());
        }
        channel.queue_declare(self.queue(consumer).into(), durable, main).await.map_err(unavailable)?;
        for pattern in &subscription.types {
            channel
                .queue_bind(
                    self.queue(consumer).into(),
                    self.exchange().into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
        }
        let mut delays = self.config.retry_delays.clone();
        delays.sort();
        delays.dedup();
        for delay in delays {
            let mut retry = FieldTable::default();
            retry.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
            retry.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
            retry.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
            retry.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(self.queue(consumer).into()));
            // Quorum queues dead-letter at most once unless told otherwise.
            retry.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
            retry.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
            if let Some(expires) = &expires {
                retry.insert("x-expires".into(), expires.clone());
            }
            channel
                .queue_declare(self.retry_queue(consumer, delay).into(), durable, retry)
                .await
                .map_err(unavailable)?;
        }
        let mut parked = FieldTable::default();
        if let Some(expires) = &expires {
            parked.insert("x-expires".into(), expires.clone());
        }
        channel.queue_declare(self.parked_queue(consumer).into(), durable, parked).await.map_err(unavailable)?;
        Ok(())
    }

    pub async fn prepare(&self, subscription: &Subscription) -> Result<(), BusError> {
        let connection = self.connect("prepare").await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        self.declare_core(&channel).await?;
        self.declare_consumer(&channel, subscription).await?;
        let _ = connection.close(200, "prepared".into()).await;
        Ok(())
    }

    pub async fn publish(&self, events: &[Outgoing]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut guard = self.publisher.lock().await;
        if guard.is_none() {
            *guard = Some(self.open_publisher().await?);
        }
        let Some((_, channel)) = guard.as_ref() else {
            return Err(BusError::Unavailable("no publisher channel".to_owned()));
        };
        let outcome = publish_confirmed(channel, &self.exchange(), events).await;
        if matches!(outcome, Err(BusError::Unavailable(_))) {
            // The channel or connection is gone: open a new one next time.
            *guard = None;
        }
        outcome
    }

    /// Runs the consumer, reconnecting with backoff, until `shutdown`.
    pub async fn consume(self: &Arc<Self>, subscription: Subscription, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match self.consume_once(&subscription, &shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(consumer = %subscription.consumer, error = %error, retry_in = ?backoff, "consumer disconnected");
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn consume_once(
        self: &Arc<Self>,
        subscription: &Subscription,
        shutdown: &CancellationToken,
    ) -> Result<(), BusError> {
        let connection = self.connect(&subscription.consumer).await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(unavailable)?;
        self.declare_core(&channel).await?;
        self.declare_consumer(&channel, subscription).await?;
        channel.basic_qos(self.config.prefetch, BasicQosOptions::default()).await.map_err(unavailable)?;
        let tag = format!("{}-{}", subscription.consumer, Uuid::new_v4().simple());
        let mut deliveries = channel
            .basic_consume(
                self.queue(&subscription.consumer).into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(consumer = %subscription.consumer, "consuming");
        let lanes = self.config.concurrency.max(1);
        let (lane_failed_tx, mut lane_failed) = tokio::sync::mpsc::channel::<BusError>(lanes);
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..lanes {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Received>(self.config.prefetch as usize);
            senders.push(tx);
            let (channel, subscription, failed) = (channel.clone(), subscription.clone(), lane_failed_tx.clone());
            let bus = Arc::clone(self);
            workers.spawn(async move {
                // Each subject lives in exactly one lane, so its state does too.
                let mut subjects: HashMap<String, SubjectState> = HashMap::new();
                while let Some(first) = rx.recv().await {
                    // Whatever else is already waiting joins the batch; nothing waits for more.
                    let mut ready = vec![first];
                    while ready.len() < subscription.max_batch {
                        match rx.try_recv() {
                            Ok(delivery) => ready.push(delivery),
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = bus.process_all(&channel, &subscription, &mut subjects, ready).await {
                        let _ = failed.send(error).await;
                        return;
                    }
                }
            });
        }
        let result = loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                Some(error) = lane_failed.recv() => break Err(error),
                next = deliveries.next() => next,
            };
            match delivery {
                Some(Ok(delivery)) => {
                    let received = Received::parse(delivery);
                    let lane = received.lane(lanes);
                    // A full lane must not keep us from hearing that another one failed.
                    tokio::select! {
                        sent = senders[lane].send(received) => if sent.is_err() {
                            break Err(BusError::Unavailable("a consumer lane stopped".to_owned()));
                        },
                        Some(error) = lane_failed.recv() => break Err(error),
                    }
                }
                Some(Err(error)) => break Err(unavailable(error)),
                None => break Err(BusError::Unavailable("the broker ended the consumer".to_owned())),
            }
        };
        // Lanes finish what they hold (unacknowledged work is redelivered anyway), then stop.
        drop(senders);
        while workers.join_next().await.is_some() {}
        let _ = connection.close(200, "shutting down".into()).await;
        result
    }

    /// Handles deliveries in order: runs of first deliveries whose subject has nothing waiting go
    /// to the handler together; anything else goes one at a time.
    async fn process_all(
        &self,
        channel: &Channel,
        subscription: &Subscription,
        subjects: &mut HashMap<String, SubjectState>,
        received: Vec<Received>,
    ) -> Result<(), BusError> {
        let mut run: Vec<(Delivery, CloudEvent)> = Vec::new();
        for item in received {
            match item.sort(subjects) {
                Sorted::Batchable(delivery, event) => run.push((delivery, event)),
                Sorted::Alone(item) => {
                    self.apply_run(channel, subscription, subjects, std::mem::take(&mut run)).await?;
                    self.process(channel, subscription, subjects, item).await?;
                }
            }
        }
        self.apply_run(channel, subscription, subjects, run).await
    }

    /// Applies a run in one handler call; if that fails, none of it took effect, and each
    /// event goes through the one-at-a-time path, so that only the one at fault is retried.
    async fn apply_run(
        &self,
        channel: &Channel,
        subscription: &Subscription,
        subjects: &mut HashMap<String, SubjectState>,
        run: Vec<(Delivery, CloudEvent)>,
    ) -> Result<(), BusError> {
        if run.len() <= 1 {
            for (delivery, event) in run {
                self.process(channel, subscription, subjects, Received { delivery, event: Ok(event) }).await?;
            }
            return Ok(());
        }
        let events: Vec<CloudEvent> = run.iter().map(|(_, event)| event.clone()).collect();
        let applied = matches!(
            tokio::time::timeout(self.config.handler_timeout, (subscription.handler)(events)).await,
            Ok(Ok(()))
        );
        for (delivery, event) in run {
            if applied {
                record_consumed(&subscription.consumer, &event.event_type, "ok");
                ack(&delivery).await?;
            } else {
                self.process(channel, subscription, subjects, Received { delivery, event: Ok(event) }).await?;
            }
        }
        Ok(())
    }

    async fn process(
        &self,
        channel: &Channel,
        subscription: &Subscription,
        subjects: &mut HashMap<String, SubjectState>,
        received: Received,
    ) -> Result<(), BusError> {
        let Received { delivery, event } = received;
        let consumer = subscription.consumer.as_str();
        let failures = header_u32(&delivery.properties, ATTEMPT);
        let deferred = header_bool(&delivery.properties, DEFERRED);
        let event: CloudEvent = match event {
            Ok(event) => event,
            Err(error) => {
                // Not an event at all: retrying cannot help.
                tracing::error!(consumer, error = %error, "unreadable message parked");
                let headers = headers(failures, false, Some(&format!("unreadable: {error}")));
                self.send(channel, &self.parked_queue(consumer), &delivery.data, headers).await?;
                return ack(&delivery).await;
            }
        };
        let subject = event.subject.clone().unwrap_or_default();
        let state = subjects.entry(subject.clone()).or_default();
        let is_the_failing_one = state.failing == Some(event.id);
        // A fresh event queues behind whatever waits; a deferred one goes when it heads the line
        // and nothing fails. A deferred event this consumer does not know (its state was lost
        // in a reconnect) has nothing to wait for.
        let known = state.deferred.contains(&event.id);
        let at_head = state.deferred.front() == Some(&event.id);
        let must_wait = !subject.is_empty()
            && !is_the_failing_one
            && (state.failing.is_some() || if deferred { known && !at_head } else { !state.deferred.is_empty() });
        if must_wait {
            if !known {
                state.deferred.push_back(event.id);
            }
            let shortest = self.config.retry_delays.iter().min().copied().unwrap_or(Duration::from_secs(1));
            self.send(channel, &self.retry_queue(consumer, shortest), &delivery.data, headers(failures, true, None))
                .await?;
            return ack(&delivery).await;
        }
        if deferred {
            state.deferred.retain(|id| *id != event.id);
        }

        let outcome = match tokio::time::timeout(
            self.config.handler_timeout,
            (subscription.handler)(vec![event.clone()]),
        )
        .await
        {
            Ok(outcome) => outcome.map_err(|e| e.0),
            Err(_) => Err(format!("handler timed out after {:?}", self.config.handler_timeout)),
        };
        let state = subjects.entry(subject.clone()).or_default();
        match outcome {
            Ok(()) => {
                if is_the_failing_one {
                    state.failing = None;
                }
                record_consumed(consumer, &event.event_type, "ok");
            }
            Err(error) => {
                let failures = failures + 1;
                if failures >= self.config.max_attempts {
                    tracing::error!(consumer, event_id = %event.id, event_type = %event.event_type, attempts = failures, error = %error, "event parked");
                    self.send(
                        channel,
                        &self.parked_queue(consumer),
                        &delivery.data,
                        headers(failures, false, Some(&error)),
                    )
                    .await?;
                    if state.failing == Some(event.id) {
                        state.failing = None;
                    }
                    record_consumed(consumer, &event.event_type, "parked");
                    metrics::counter!("events_dead_lettered_total", "consumer" => consumer.to_owned(), "type" => event.event_type.clone()).increment(1);
                } else {
                    let delay = self.config.retry_delay(failures);
                    tracing::warn!(consumer, event_id = %event.id, event_type = %event.event_type, attempt = failures, retry_in = ?delay, error = %error, "event failed, will retry");
                    self.send(
                        channel,
                        &self.retry_queue(consumer, delay),
                        &delivery.data,
                        headers(failures, false, Some(&error)),
                    )
                    .await?;
                    if !subject.is_empty() {
                        state.failing = Some(event.id);
                    }
                    record_consumed(consumer, &event.event_type, "retried");
                    metrics::counter!("events_retried_total", "consumer" => consumer.to_owned(), "type" => event.event_type.clone()).increment(1);
                }
            }
        }
        if state.failing.is_none() && state.deferred.is_empty() {
            subjects.remove(&subject);
        }
        ack(&delivery).await
    }

    /// Publishes `body` to `queue` through the default exchange and waits for the confirm.
    async fn send(&self, channel: &Channel, queue: &str, body: &[u8], headers: FieldTable) -> Result<(), BusError> {
        let properties = persistent().with_headers(headers);
        let publish = channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, properties);
        let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, publish)
            .await
            .map_err(|_| BusError::Unavailable("publish did not complete".to_owned()))?
            .map_err(unavailable)?;
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
            Ok(Ok(_)) => Err(BusError::Nacked),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(BusError::Unavailable("no publisher confirm".to_owned())),
        }
    }

    pub async fn dead_letters(&self, consumer: &str) -> Result<Vec<Parked>, BusError> {
        let connection = self.connect("admin").await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let queue = self.parked_queue(consumer);
        let mut parked = Vec::new();
        let mut taken = Vec::new();
        // Take every message without acknowledging, then hand them all back.
        while let Some(message) =
            channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.map_err(unavailable)?
        {
            let delivery = message.delivery;
            if let Ok(event) = serde_json::from_slice::<CloudEvent>(&delivery.data) {
                parked.push(Parked {
                    event,
                    attempts: header_u32(&delivery.properties, ATTEMPT),
                    error: header_string(&delivery.properties, ERROR).unwrap_or_default(),
                });
            }
            taken.push(delivery);
        }
        for delivery in taken {
            delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.map_err(unavailable)?;
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(parked)
    }

    pub async fn replay_dead_letters(&self, consumer: &str) -> Result<usize, BusError> {
        let connection = self.connect("admin").await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(unavailable)?;
        let parked = self.parked_queue(consumer);
        let mut replayed = 0;
        while let Some(message) =
            channel.basic_get(parked.as_str().into(), BasicGetOptions::default()).await.map_err(unavailable)?
        {
            let delivery = message.delivery;
            // A fresh set of attempts: back into the consumer's own queue, then off the lot.
            self.send(&channel, &self.queue(consumer), &delivery.data, FieldTable::default()).await?;
            ack(&delivery).await?;
            replayed += 1;
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(replayed)
    }

    pub async fn tail(
        &self,
        from: TailFrom,
        pattern: &str,
        shutdown: CancellationToken,
        mut each: impl FnMut(CloudEvent) -> bool + Send,
    ) -> Result<(), BusError> {
        let connection = self.connect("tail").await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        self.declare_core(&channel).await?;
        // Stream consumers need a prefetch; acknowledgements only pace delivery.
        channel.basic_qos(256, BasicQosOptions::default()).await.map_err(unavailable)?;
        let mut arguments = FieldTable::default();
        let offset = match from {
            TailFrom::Start => AMQPValue::LongString("first".into()),
            TailFrom::Now => AMQPValue::LongString("next".into()),
            TailFrom::Offset(n) => AMQPValue::LongLongInt(n.min(i64::MAX as u64) as i64),
            TailFrom::Since(at) => AMQPValue::Timestamp(at.timestamp().max(0) as u64),
        };
        arguments.insert("x-stream-offset".into(), offset);
        let mut deliveries = channel
            .basic_consume(
                self.log_stream().into(),
                format!("tail-{}", Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                arguments,
            )
            .await
            .map_err(unavailable)?;
        loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => break,
                next = deliveries.next() => next,
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(unavailable(error)),
                None => break,
            };
            ack(&delivery).await?;
            if let Ok(event) = serde_json::from_slice::<CloudEvent>(&delivery.data)
                && topic_matches(pattern, &event.event_type)
                && !each(event)
            {
                break;
            }
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }

    /// Deletes the exchange, the log stream, and the queues of `consumers`: for tests and for
    /// decommissioning a namespace. Messages in them are lost.
    pub async fn delete_topology(&self, consumers: &[&str]) -> Result<(), BusError> {
        let connection = self.connect("admin").await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let mut queues = vec![self.log_stream()];
        for consumer in consumers {
            queues.push(self.queue(consumer));
            queues.push(self.parked_queue(consumer));
            queues.extend(self.config.retry_delays.iter().map(|delay| self.retry_queue(consumer, *delay)));
        }
        for queue in queues {
            channel.queue_delete(queue.into(), Default::default()).await.map_err(unavailable)?;
        }
        channel.exchange_delete(self.exchange().into(), Default::default()).await.map_err(unavailable)?;
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }

    /// Checks the publisher's connection, opening it when there is none: readiness probes then
    /// cost nothing while the broker is up.
    pub async fn ping(&self) -> Result<(), BusError> {
        let mut guard = self.publisher.lock().await;
        if let Some((connection, channel)) = guard.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(());
        }
        *guard = None;
        *guard = Some(self.open_publisher().await?);
        Ok(())
    }

    /// A confirm-mode channel on a new connection, with the exchange and the log declared.
    async fn open_publisher(&self) -> Result<(Connection, Channel), BusError> {
        let connection = self.connect("publisher").await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(unavailable)?;
        self.declare_core(&channel).await?;
        Ok((connection, channel))
    }
}

/// A delivery and its event, parsed once where it arrives.
struct Received {
    delivery: Delivery,
    event: Result<CloudEvent, String>,
}

impl Received {
    fn parse(delivery: Delivery) -> Self {
        let event = serde_json::from_slice(&delivery.data).map_err(|e| e.to_string());
        Self { delivery, event }
    }

    /// The lane: by subject, so that one subject's events stay in order; events without one
    /// (or unreadable) spread by id or content.
    fn lane(&self, lanes: usize) -> usize {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        match &self.event {
            Ok(CloudEvent { subject: Some(subject), .. }) if !subject.is_empty() => subject.hash(&mut hasher),
            Ok(event) => event.id.hash(&mut hasher),
            Err(_) => self.delivery.data.hash(&mut hasher),
        }
        (hasher.finish() % lanes as u64) as usize
    }

    /// Whether it may join a batch: a first delivery of a readable event whose subject has
    /// nothing waiting.
    fn sort(self, subjects: &HashMap<String, SubjectState>) -> Sorted {
        let first =
            header_u32(&self.delivery.properties, ATTEMPT) == 0 && !header_bool(&self.delivery.properties, DEFERRED);
        match self.event {
            Ok(event) if first => {
                let waiting = event
                    .subject
                    .as_ref()
                    .and_then(|s| subjects.get(s))
                    .is_some_and(|state| state.failing.is_some() || !state.deferred.is_empty());
                if waiting {
                    Sorted::Alone(Self { delivery: self.delivery, event: Ok(event) })
                } else {
                    Sorted::Batchable(self.delivery, event)
                }
            }
            event => Sorted::Alone(Self { delivery: self.delivery, event }),
        }
    }
}

enum Sorted {
    Batchable(Delivery, CloudEvent),
    Alone(Received),
}

/// Publishes every event, then waits for every confirm: one round trip's latency for the batch.
async fn publish_confirmed(channel: &Channel, exchange: &str, events: &[Outgoing]) -> Result<(), BusError> {
    let mut confirms = Vec::with_capacity(events.len());
    for event in events {
        let body = event.envelope.as_bytes();
        let properties = persistent()
            .with_message_id(event.id.to_string().into())
            .with_type(event.event_type.as_str().into())
            .with_timestamp(event.time.timestamp().max(0) as u64);
        let confirm = channel
            .basic_publish(
                exchange.into(),
                event.event_type.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .map_err(unavailable)?;
        confirms.push(confirm);
    }
    let all = futures_util::future::join_all(confirms);
    let confirmations = tokio::time::timeout(CONFIRM_TIMEOUT, all)
        .await
        .map_err(|_| BusError::Unavailable("no publisher confirms".to_owned()))?;
    for confirmation in confirmations {
        match confirmation {
            Ok(confirmation) if confirmation.is_ack() => {}
            Ok(_) => return Err(BusError::Nacked),
            Err(error) => return Err(unavailable(error)),
        }
    }
    Ok(())
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_content_type(CONTENT_TYPE.into()).with_delivery_mode(2)
}

fn headers(failures: u32, deferred: bool, error: Option<&str>) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(ATTEMPT.into(), AMQPValue::LongUInt(failures));
    if deferred {
        table.insert(DEFERRED.into(), AMQPValue::Boolean(true));
    }
    if let Some(error) = error {
        let error: String = error.chars().take(1000).collect();
        table.insert(ERROR.into(), AMQPValue::LongString(error.into()));
    }
    table
}

fn header<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(&ShortString::from(key))
}

fn header_u32(properties: &BasicProperties, key: &str) -> u32 {
    match header(properties, key) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongLongInt(n)) => (*n).clamp(0, u32::MAX as i64) as u32,
        _ => 0,
    }
}

fn header_bool(properties: &BasicProperties, key: &str) -> bool {
    matches!(header(properties, key), Some(AMQPValue::Boolean(true)))
}

fn header_string(properties: &BasicProperties, key: &str) -> Option<String> {
    match header(properties, key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Acknowledges a delivery. Bounded in time: on a connection that died without closing, an
/// ack may never complete, and a lane stuck on it would keep the consumer from reconnecting.
async fn ack(delivery: &Delivery) -> Result<(), BusError> {
    match tokio::time::timeout(CONFIRM_TIMEOUT, delivery.acker.ack(BasicAckOptions::default())).await {
        Ok(acked) => acked.map(|_| ()).map_err(unavailable),
        Err(_) => Err(BusError::Unavailable("no answer to an ack".to_owned())),
    }
}

fn unavailable(error: lapin::Error) -> BusError {
    BusError::Unavailable(error.to_string())
}
