//! Files in and out: raw pair inputs, prepared shards, the manifest.

pub mod checksum;
pub mod input;
pub mod manifest;
pub mod quarantine;
pub mod shard;
