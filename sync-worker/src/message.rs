//! Queue message bodies (JSON): `{"job_id", "connector_id"}` on the jobs queue and
//! `{"test_id"}` on the connection-tests queue. Unknown fields are tolerated (additive
//! changes); a body that does not decode is a poison message and is dead-lettered.

use serde::Deserialize;

/// A sync job to run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobMessage {
    /// `job_…`
    pub job_id: String,
    /// `cnn_…`
    pub connector_id: String,
}

/// A connectivity test to answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TestMessage {
    /// `tst_…`
    pub test_id: String,
}

fn check_id(field: &str, value: &str, prefix: &str) -> Result<(), String> {
    if value.len() <= prefix.len() || !value.starts_with(prefix) || value.len() > 200 {
        return Err(format!("{field} must be a {prefix}… id"));
    }
    Ok(())
}

/// Decodes a jobs-queue body; the error is the dead-letter reason.
pub fn decode_job(body: &[u8]) -> Result<JobMessage, String> {
    let m: JobMessage = serde_json::from_slice(body).map_err(|e| format!("undecodable job message: {e}"))?;
    check_id("job_id", &m.job_id, "job_")?;
    check_id("connector_id", &m.connector_id, "cnn_")?;
    Ok(m)
}

/// Decodes a connection-tests body; the error is the dead-letter reason.
pub fn decode_test(body: &[u8]) -> Result<TestMessage, String> {
    let m: TestMessage = serde_json::from_slice(body).map_err(|e| format!("undecodable test message: {e}"))?;
    check_id("test_id", &m.test_id, "tst_")?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_messages_decode_and_tolerate_extra_fields() {
        let m = decode_job(br#"{"job_id":"job_01J","connector_id":"cnn_01K","trigger":"manual"}"#).unwrap();
        assert_eq!(m, JobMessage { job_id: "job_01J".into(), connector_id: "cnn_01K".into() });
    }

    #[test]
    fn poison_job_messages_give_a_reason() {
        for bad in [
            &b"not json"[..],
            br#"{"job_id":"job_1"}"#,
            br#"{"job_id":"x","connector_id":"cnn_1"}"#,
            br#"{"job_id":"job_","connector_id":"cnn_1"}"#,
        ] {
            let e = decode_job(bad).unwrap_err();
            assert!(!e.is_empty());
        }
    }

    #[test]
    fn test_messages_decode() {
        assert_eq!(decode_test(br#"{"test_id":"tst_9"}"#).unwrap().test_id, "tst_9");
        assert!(decode_test(br#"{"test_id":""}"#).is_err());
        assert!(decode_test(b"[]").is_err());
    }
}
