//! Why the front door turned a request away, classified where it happened: no usable
//! key, a key that may not use what it asked for, or a key over one of its per-minute
//! limits. The HTTP shell maps each to its status and body; nothing here knows HTTP.

/// A key's per-minute limit, by its keys-file field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Requests,
    Tokens,
}

impl Limit {
    /// The keys file field (and the `limit` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Requests => "requests_per_minute",
            Limit::Tokens => "tokens_per_minute",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("no API key: send `Authorization: Bearer <key>`")]
    Missing,
    /// Credentials that are not a bearer token.
    #[error("the Authorization header must be `Bearer <key>`")]
    Malformed,
    /// A token no key in force has.
    #[error("the API key is not valid")]
    Unknown,
    /// The key may not use the model (a tier name or a model id) the request names.
    #[error("this API key may not use the model `{model}`{why}")]
    Forbidden { model: String, why: String },
    /// The key is over one of its per-minute limits.
    #[error("{message}")]
    RateLimited {
        limit: Limit,
        /// Seconds until the request would fit; `None` when it never will.
        retry_after: Option<u64>,
        message: String,
    },
}

impl AuthError {
    /// Whether the caller is unknown (no key, a malformed one, one not in force), as
    /// opposed to a known key refused what it asked for.
    pub fn unauthenticated(&self) -> bool {
        match self {
            Self::Missing | Self::Malformed | Self::Unknown => true,
            Self::Forbidden { .. } | Self::RateLimited { .. } => false,
        }
    }

    /// A bounded label: the `reason` of the authentication failures counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown_key",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}
