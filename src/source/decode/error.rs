//! [`DecodeError`]: why a message, or one reading of it, gave no reading, and the
//! label (`reason`) the source stage counts it by in `/metrics`.

use super::super::name::{NameProblem, UnitProblem};

/// Why a message, or one reading of it, gave no reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {size} bytes is larger than the limit of {max}")]
    Oversized { size: usize, max: usize },
    #[error("topic is outside the prefix {prefix:?} and no ingest.map matches it")]
    OutsidePrefix { prefix: String },
    #[error("payload is not valid UTF-8")]
    InvalidUtf8,
    #[error("payload {0:?} is not a number")]
    NotANumber(String),
    #[error("value {0} is not finite")]
    NotFinite(String),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("JSON object has no numeric field")]
    NoNumericFields,
    #[error("bad timestamp {0:?}: expected epoch milliseconds or RFC 3339")]
    BadTimestamp(String),
    #[error("series {series:?} {}: reading refused", problem.describe())]
    InvalidSeries {
        problem: NameProblem,
        series: String,
    },
    #[error("unit of {series:?} {}: stored without it", match problem { UnitProblem::ControlChar => "contains a control character", UnitProblem::TooLong => "is longer than 32 bytes" })]
    BadUnit {
        problem: UnitProblem,
        series: String,
    },
    #[error("timestamp {ts} of {series:?} is too far in the future (ingest.max_clock_skew; is the device's clock wrong?): reading refused")]
    FutureTimestamp { series: String, ts: String },
    #[error("timestamp {ts} of {series:?} is older than the retention: reading refused")]
    TooOld { series: String, ts: String },
    #[error("retained message for {series:?} carries no timestamp of its own: not stored again with the receive time")]
    RetainedWithoutTs { series: String },
    #[error("retained reading of {series:?} at {ts} is not newer than the last one known: not stored again")]
    RetainedNotNewer { series: String, ts: String },
    #[error("line protocol: {0}")]
    BadLineProtocol(String),
    #[error("new series {series:?} refused: {max} series are known already (ingest.max_series)")]
    TooManySeries { series: String, max: usize },
}

impl DecodeError {
    /// Every reason, in the order metrics list them.
    pub const REASONS: [&'static str; 21] = [
        "oversized",
        "outside_prefix",
        "invalid_utf8",
        "not_a_number",
        "not_finite",
        "malformed_json",
        "no_numeric_fields",
        "bad_timestamp",
        "series_wildcard",
        "series_nul",
        "series_control_char",
        "series_empty_level",
        "series_too_long",
        "unit_control_char",
        "unit_too_long",
        "future_timestamp",
        "too_old",
        "retained_without_ts",
        "retained_not_newer",
        "bad_line_protocol",
        "too_many_series",
    ];

    /// Short label used for counting and metrics.
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }

    /// Index into [`Self::REASONS`].
    pub fn index(&self) -> usize {
        match self {
            DecodeError::Oversized { .. } => 0,
            DecodeError::OutsidePrefix { .. } => 1,
            DecodeError::InvalidUtf8 => 2,
            DecodeError::NotANumber(_) => 3,
            DecodeError::NotFinite(_) => 4,
            DecodeError::MalformedJson(_) => 5,
            DecodeError::NoNumericFields => 6,
            DecodeError::BadTimestamp(_) => 7,
            DecodeError::InvalidSeries { problem, .. } => match problem {
                NameProblem::Wildcard => 8,
                NameProblem::Nul => 9,
                NameProblem::ControlChar => 10,
                NameProblem::EmptyLevel => 11,
                NameProblem::TooLong => 12,
            },
            DecodeError::BadUnit { problem, .. } => match problem {
                UnitProblem::ControlChar => 13,
                UnitProblem::TooLong => 14,
            },
            DecodeError::FutureTimestamp { .. } => 15,
            DecodeError::TooOld { .. } => 16,
            DecodeError::RetainedWithoutTs { .. } => 17,
            DecodeError::RetainedNotNewer { .. } => 18,
            DecodeError::BadLineProtocol(_) => 19,
            DecodeError::TooManySeries { .. } => 20,
        }
    }
}
