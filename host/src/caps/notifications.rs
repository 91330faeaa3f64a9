//! `notifications`: messages on the agent's `notifications` channel.

use serde_json::json;

use super::tags::check_key;
use super::{CapError, MAX_KEY_BYTES, Session};
use crate::model::{MessageId, well_known};

/// Longest notification text; notifications are meant to be read by people.
pub const MAX_NOTIFICATION_BYTES: usize = 4 * 1024;

/// A notification as the guest sends it.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The text.
    pub message: String,
    /// A short title.
    pub title: Option<String>,
    /// 3 (error) to 7 (debug).
    pub severity: u8,
    /// A topic subscribers filter on.
    pub topic: Option<String>,
}

impl Session {
    /// `notifications.send`.
    pub fn notify(&mut self, n: Notification) -> Result<MessageId, CapError> {
        if !(3..=7).contains(&n.severity) {
            return Err(CapError::Invalid(format!("severity {} is outside 3 (error) ..= 7 (debug)", n.severity)));
        }
        if n.message.is_empty() || n.message.len() > MAX_NOTIFICATION_BYTES {
            return Err(CapError::Invalid(format!("message must be 1-{MAX_NOTIFICATION_BYTES} bytes")));
        }
        if n.title.as_ref().is_some_and(|t| t.len() > MAX_KEY_BYTES) {
            return Err(CapError::Invalid(format!("title must be at most {MAX_KEY_BYTES} bytes")));
        }
        if let Some(topic) = &n.topic {
            check_key("topic", topic)?;
        }
        let data = json!({
            "message": n.message,
            "title": n.title,
            "severity": n.severity,
            "topic": n.topic,
            "app_key": self.grant.app_key,
        });
        let channel = self.own(well_known::NOTIFICATIONS);
        self.push_message(channel, data, None, None)
    }
}
