//! Signed webhooks (placeholder).
