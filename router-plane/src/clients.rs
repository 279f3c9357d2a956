//! The router's connections to workers: one lazily-connected gRPC channel per worker
//! address, reused across requests (HTTP/2 multiplexes them). With mTLS each must present
//! a worker's certificate.

use std::{collections::HashMap, sync::Mutex};

use switchback_common::tls::Role;
use switchback_proto::pb::inference_client::InferenceClient;
use tonic::transport::Channel;

#[derive(Debug, Default)]
pub struct Clients {
    channels: Mutex<HashMap<String, Channel>>,
    /// Plaintext or mTLS; a cached channel re-handshakes with the certificate in force
    /// whenever it reconnects.
    dialer: switchback_common::tls::Dialer,
}

impl Clients {
    pub fn new(dialer: switchback_common::tls::Dialer) -> Self {
        Self {
            channels: Mutex::default(),
            dialer,
        }
    }

    pub fn get(&self, address: &str) -> Result<InferenceClient<Channel>, tonic::transport::Error> {
        Ok(InferenceClient::new(self.channel(address)?))
    }

    /// The cached channel to a worker, connected on first use.
    fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = channels.get(address) {
            return Ok(ch.clone());
        }
        // Keep-alives with a timeout: a hung or cut-off worker breaks its streams within
        // seconds instead of holding them until the request deadline.
        let channel = self.dialer.connect_lazy(address, Role::Worker)?;
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}
