//! [`LeaseTable`] on DynamoDB, with the KCL's attribute names.
//!
//! One table serves every consumer application (projectors, replay): `leaseKey` is
//! `<application>:<shardId>`. The KCL gives each application a table of its own; one
//! table per application is a Terraform line away if ever needed, while one shared
//! table keeps the local stack and the lag dashboard simple.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{Checkpoint, Lease, LeaseError, LeaseTable};

const KEY: &str = "leaseKey";
const OWNER: &str = "leaseOwner";
const COUNTER: &str = "leaseCounter";
const CHECKPOINT: &str = "checkpoint";
const SUB_SEQUENCE: &str = "checkpointSubSequenceNumber";
const PARENTS: &str = "parentShardId";
const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
/// Ours, not the KCL's: a rebalance request (see [`Lease::pending_owner`]).
const PENDING_OWNER: &str = "pendingOwner";

/// The DynamoDB adapter.
#[derive(Debug, Clone)]
pub struct DynamoLeaseTable {
    client: Client,
    table: String,
    application: String,
}

impl DynamoLeaseTable {
    /// Leases of `application` in `table`.
    pub fn new(client: Client, table: impl Into<String>, application: impl Into<String>) -> Self {
        DynamoLeaseTable {
            client,
            table: table.into(),
            application: application.into(),
        }
    }

    fn key(&self, shard_id: &str) -> AttributeValue {
        AttributeValue::S(format!("{}:{shard_id}", self.application))
    }

    /// An update conditional on the counter we saw (and, for an owner's write, on still
    /// being the owner); bumps the counter; returns the lease as written.
    async fn fenced_update(
        &self,
        seen: &Lease,
        owner_must_be: Option<&str>,
        set_or_remove: &str,
        mut values: HashMap<String, AttributeValue>,
    ) -> Result<Lease, LeaseError> {
        let mut condition = format!("{COUNTER} = :seen");
        if let Some(me) = owner_must_be {
            condition.push_str(&format!(" AND {OWNER} = :me"));
            values.insert(":me".into(), AttributeValue::S(me.to_owned()));
        }
        values.insert(":seen".into(), n(seen.counter));
        values.insert(":one".into(), n(1));
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, self.key(&seen.shard_id))
            .update_expression(set_or_remove)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| classify(e, &seen.shard_id))?;
        let item = out.attributes.unwrap_or_default();
        self.decode(&item)
    }

    fn decode(&self, item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
        let key = item.get(KEY).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let corrupt = |reason: &str| LeaseError::Corrupt {
            key: key.clone(),
            reason: reason.to_owned(),
        };
        let shard_id = key
            .strip_prefix(&format!("{}:", self.application))
            .ok_or_else(|| corrupt("leaseKey is not <application>:<shard>"))?
            .to_owned();
        let num = |name: &str| -> Result<u64, LeaseError> {
            match item.get(name) {
                None => Ok(0),
                Some(v) => v
                    .as_n()
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| corrupt(&format!("{name} is not a number"))),
            }
        };
        let checkpoint = item
            .get(CHECKPOINT)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| corrupt("no checkpoint"))?;
        Ok(Lease {
            shard_id,
            owner: item.get(OWNER).and_then(|v| v.as_s().ok()).cloned(),
            counter: num(COUNTER)?,
            checkpoint: Checkpoint::from_stored(checkpoint, num(SUB_SEQUENCE)?),
            parent_shard_ids: item
                .get(PARENTS)
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default(),
            owner_switches_since_checkpoint: num(OWNER_SWITCHES)?,
            pending_owner: item.get(PENDING_OWNER).and_then(|v| v.as_s().ok()).cloned(),
        })
    }
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn classify<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: SdkError<E, R>,
    shard: &str,
) -> LeaseError {
    match e.code() {
        Some("ConditionalCheckFailedException") => LeaseError::Lost(shard.to_owned()),
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded") => {
            LeaseError::Throttled(e.message().unwrap_or_default().to_owned())
        }
        Some(code) => LeaseError::Unavailable(format!("{code}: {}", e.message().unwrap_or_default())),
        None => LeaseError::Unavailable(format!("{e:?}")),
    }
}

impl LeaseTable for DynamoLeaseTable {
    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression(format!("begins_with({KEY}, :app)"))
            .expression_attribute_values(":app", AttributeValue::S(format!("{}:", self.application)))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut leases = Vec::new();
        while let Some(page) = pages.next().await {
            for item in page.map_err(|e| classify(e, "*"))?.items() {
                leases.push(self.decode(item)?);
            }
        }
        leases.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(leases)
    }

    async fn create(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let (checkpoint, sub) = lease.checkpoint.as_stored();
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, self.key(&lease.shard_id))
            .item(COUNTER, n(lease.counter))
            .item(CHECKPOINT, AttributeValue::S(checkpoint.to_owned()))
            .item(SUB_SEQUENCE, n(sub))
            .item(OWNER_SWITCHES, n(lease.owner_switches_since_checkpoint))
            .condition_expression(format!("attribute_not_exists({KEY})"));
        if let Some(owner) = &lease.owner {
            put = put.item(OWNER, AttributeValue::S(owner.clone()));
        }
        if !lease.parent_shard_ids.is_empty() {
            // A string set, as the KCL writes it (and DynamoDB forbids an empty set).
            put = put.item(PARENTS, AttributeValue::Ss(lease.parent_shard_ids.clone()));
        }
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) => match classify(e, &lease.shard_id) {
                LeaseError::Lost(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn take(&self, seen: &Lease, worker: &str) -> Result<Lease, LeaseError> {
        let switch = if seen.is_owned_by(worker) { 0 } else { 1 };
        let values = HashMap::from([
            (":worker".to_owned(), AttributeValue::S(worker.to_owned())),
            (":switch".to_owned(), n(switch)),
        ]);
        self.fenced_update(
            seen,
            None,
            &format!(
                "SET {OWNER} = :worker, {COUNTER} = {COUNTER} + :one, {OWNER_SWITCHES} = {OWNER_SWITCHES} + :switch \
                 REMOVE {PENDING_OWNER}"
            ),
            values,
        )
        .await
    }

    async fn renew(&self, held: &Lease) -> Result<Lease, LeaseError> {
        let me = held.owner.clone().unwrap_or_default();
        self.fenced_update(
            held,
            Some(&me),
            &format!("SET {COUNTER} = {COUNTER} + :one"),
            HashMap::new(),
        )
        .await
    }

    async fn checkpoint(&self, held: &Lease, to: Checkpoint) -> Result<Lease, LeaseError> {
        let me = held.owner.clone().unwrap_or_default();
        let (checkpoint, sub) = to.as_stored();
        let values = HashMap::from([
            (":cp".to_owned(), AttributeValue::S(checkpoint.to_owned())),
            (":sub".to_owned(), n(sub)),
            (":zero".to_owned(), n(0)),
        ]);
        self.fenced_update(
            held,
            Some(&me),
            &format!(
                "SET {CHECKPOINT} = :cp, {SUB_SEQUENCE} = :sub, {OWNER_SWITCHES} = :zero, {COUNTER} = {COUNTER} + :one"
            ),
            values,
        )
        .await
    }

    async fn release(&self, held: &Lease) -> Result<Lease, LeaseError> {
        let me = held.owner.clone().unwrap_or_default();
        self.fenced_update(
            held,
            Some(&me),
            &format!("REMOVE {OWNER}, {PENDING_OWNER} SET {COUNTER} = {COUNTER} + :one"),
            HashMap::new(),
        )
        .await
    }

    async fn request_handoff(&self, seen: &Lease, worker: &str) -> Result<Lease, LeaseError> {
        let owner = seen.owner.clone().unwrap_or_default();
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, self.key(&seen.shard_id))
            .update_expression(format!("SET {PENDING_OWNER} = :worker"))
            .condition_expression(format!("{OWNER} = :owner AND attribute_not_exists({PENDING_OWNER})"))
            .expression_attribute_values(":worker", AttributeValue::S(worker.to_owned()))
            .expression_attribute_values(":owner", AttributeValue::S(owner))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| classify(e, &seen.shard_id))?;
        self.decode(&out.attributes.unwrap_or_default())
    }

    async fn hand_off(&self, held: &Lease) -> Result<Lease, LeaseError> {
        let me = held.owner.clone().unwrap_or_default();
        let Some(successor) = held.pending_owner.clone() else {
            return self.release(held).await;
        };
        let values = HashMap::from([(":next".to_owned(), AttributeValue::S(successor))]);
        self.fenced_update(
            held,
            Some(&me),
            &format!(
                "SET {OWNER} = :next, {COUNTER} = {COUNTER} + :one, {OWNER_SWITCHES} = {OWNER_SWITCHES} + :one \
                 REMOVE {PENDING_OWNER}"
            ),
            values,
        )
        .await
    }
}
