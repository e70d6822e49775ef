//! Node- and range-local metadata in the `meta` column family: the store
//! identity (which cluster, which node), the descriptors of the nodes this
//! node knows, and the descriptor of every range that has a replica here.

use concord_proto::meta::{NodeDescriptor, RangeDescriptor, ReplicaTombstone, StoreIdent};
use prost::Message;

use crate::engine::{Cf, Engine, WriteBatch};
use crate::{keys, Error, Result};

fn decode<M: Message + Default>(what: &str, raw: &[u8]) -> Result<M> {
    M::decode(raw).map_err(|e| Error::Corruption(format!("{what}: {e}")))
}

/// The store identity, if this store belongs to a cluster yet.
pub fn load_ident(engine: &dyn Engine) -> Result<Option<StoreIdent>> {
    engine
        .get(Cf::Meta, keys::META_IDENT)?
        .map(|raw| decode("store ident", &raw))
        .transpose()
}

/// Records the store identity.
pub fn save_ident(batch: &mut WriteBatch, ident: &StoreIdent) {
    batch.put(Cf::Meta, keys::META_IDENT.to_vec(), ident.encode_to_vec());
}

/// Every node descriptor this store knows.
pub fn load_nodes(engine: &dyn Engine) -> Result<Vec<NodeDescriptor>> {
    engine
        .scan(
            Cf::Meta,
            keys::META_NODE_PREFIX,
            Some(keys::META_NODE_END),
            0,
        )?
        .iter()
        .map(|(_, v)| decode("node descriptor", v))
        .collect()
}

/// Records a node descriptor.
pub fn save_node(batch: &mut WriteBatch, node: &NodeDescriptor) {
    batch.put(
        Cf::Meta,
        keys::meta_node(node.node_id),
        node.encode_to_vec(),
    );
}

/// The descriptor of every range with a replica on this store.
pub fn load_ranges(engine: &dyn Engine) -> Result<Vec<RangeDescriptor>> {
    engine
        .scan(
            Cf::Meta,
            keys::META_RANGE_PREFIX,
            Some(keys::META_RANGE_END),
            0,
        )?
        .iter()
        .map(|(_, v)| decode("range descriptor", v))
        .collect()
}

/// Forgets a range descriptor (the replica was removed).
pub fn delete_range(batch: &mut WriteBatch, range_id: u64) {
    batch.delete(Cf::Meta, keys::meta_range(range_id));
    batch.delete(Cf::Meta, keys::meta_gc_threshold(range_id));
}

/// A range's MVCC GC threshold (zero if it was never collected).
pub fn load_gc_threshold(engine: &dyn Engine, range_id: u64) -> Result<concord_hlc::Timestamp> {
    let ts: Option<concord_proto::meta::Timestamp> = engine
        .get(Cf::Meta, &keys::meta_gc_threshold(range_id))?
        .map(|raw| decode("gc threshold", &raw))
        .transpose()?;
    Ok(concord_proto::ts(ts))
}

/// Records a range's MVCC GC threshold.
pub fn save_gc_threshold(batch: &mut WriteBatch, range_id: u64, ts: concord_hlc::Timestamp) {
    let ts: concord_proto::meta::Timestamp = ts.into();
    batch.put(
        Cf::Meta,
        keys::meta_gc_threshold(range_id),
        ts.encode_to_vec(),
    );
}

/// The tombstone of a range removed from this store, if any.
pub fn load_tombstone(engine: &dyn Engine, range_id: u64) -> Result<Option<ReplicaTombstone>> {
    engine
        .get(Cf::Meta, &keys::meta_tombstone(range_id))?
        .map(|raw| decode("replica tombstone", &raw))
        .transpose()
}

/// Records that replica ids of `range_id` below `next_replica_id` are gone
/// from this store for good.
pub fn save_tombstone(batch: &mut WriteBatch, range_id: u64, next_replica_id: u64) {
    let t = ReplicaTombstone { next_replica_id };
    batch.put(Cf::Meta, keys::meta_tombstone(range_id), t.encode_to_vec());
}

/// Records a range descriptor.
pub fn save_range(batch: &mut WriteBatch, desc: &RangeDescriptor) {
    batch.put(
        Cf::Meta,
        keys::meta_range(desc.range_id),
        desc.encode_to_vec(),
    );
}
