//! Calls workers: one lazily-connected gRPC channel per worker address, reused across
//! requests (HTTP/2 multiplexes them). With mTLS each must present a worker's certificate.

use std::{collections::HashMap, sync::Mutex};

use switchback_common::tls::Role;
use switchback_proto::pb::{self, inference_client::InferenceClient};
use tonic::transport::Channel;

use crate::api::openai::{Generation, PromptKind};

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

/// The worker request for a validated generation.
pub fn request(request_id: &str, g: &Generation) -> pb::GenerateRequest {
    let prompt = match &g.prompt {
        PromptKind::Chat(messages) => pb::generate_request::Prompt::Chat(pb::ChatPrompt {
            messages: messages
                .iter()
                .map(|m| pb::ChatMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                    tool_calls: m.tool_calls.clone(),
                    tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
                    name: m.name.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        PromptKind::Text(text) => pb::generate_request::Prompt::Text(text.clone()),
    };
    pb::GenerateRequest {
        request_id: request_id.to_owned(),
        prompt: Some(prompt),
        sampling: Some(pb::SamplingParams {
            temperature: g.temperature,
            top_p: g.top_p,
            top_k: None,
            max_tokens: g.max_tokens.unwrap_or(0),
            stop: g.stop.clone(),
            frequency_penalty: g.frequency_penalty,
            presence_penalty: g.presence_penalty,
            seed: g.seed,
        }),
        top_logprobs: g.logprobs.unwrap_or(0),
        tools: g.asks.tools.clone(),
        tool_choice: g.asks.tool_choice.clone(),
        single_tool_call: g.asks.single_tool_call,
        response_format: g.asks.response_format.clone(),
    }
}
