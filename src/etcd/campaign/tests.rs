//! Tests of the etcd campaign.
