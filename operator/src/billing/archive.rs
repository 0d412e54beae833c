//! The stored form of a finalized report's lines: JSON Lines (one [`SettlementLine`] per line, in
//! canonical order), gzip-compressed, base64-encoded, and cut into chunks that each fit in one
//! ConfigMap (the API server refuses objects over 1 MiB). Joining the chunks in order, decoding
//! and decompressing gives the lines back; their checksum must equal the report's.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::{Compression, read::GzDecoder, write::GzEncoder};

use super::SettlementLine;
use super::settlement::checksum_like;

/// Characters of base64 per chunk: 900 000, well under the 1 MiB limit of a ConfigMap with its
/// metadata.
pub const CHUNK_CHARS: usize = 900_000;

/// Why stored lines can't be read back.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("stored lines are not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("stored lines are not gzip: {0}")]
    Gzip(#[from] std::io::Error),
    #[error("stored line {line} is not a settlement line: {error}")]
    Line {
        line: usize,
        error: serde_json::Error,
    },
    #[error("stored lines have checksum {found}, the report says {expected}")]
    Checksum { expected: String, found: String },
}

/// `lines` as chunks of at most [`CHUNK_CHARS`] base64 characters (at least one chunk).
pub fn encode(lines: &[SettlementLine], chunk_chars: usize) -> Vec<String> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for line in lines {
        // Serializing a struct of strings and decimals into memory can't fail.
        let _ = serde_json::to_writer(&mut gz, line);
        let _ = gz.write_all(b"\n");
    }
    // Finishing into a Vec can't fail.
    let compressed = gz.finish().unwrap_or_default();
    let text = STANDARD.encode(compressed);
    let chunk_chars = chunk_chars.max(4);
    // base64 is ASCII, so cutting at any byte is cutting at a character.
    let chunks: Vec<String> = text
        .as_bytes()
        .chunks(chunk_chars)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    if chunks.is_empty() {
        vec![String::new()]
    } else {
        chunks
    }
}

/// The lines from chunks given in order; checks them against `expected_checksum` when given.
pub fn decode(
    chunks: &[String],
    expected_checksum: Option<&str>,
) -> Result<Vec<SettlementLine>, ArchiveError> {
    let compressed = STANDARD.decode(chunks.concat())?;
    let mut text = String::new();
    GzDecoder::new(compressed.as_slice()).read_to_string(&mut text)?;
    let lines = text
        .lines()
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|error| ArchiveError::Line { line: n + 1, error })
        })
        .collect::<Result<Vec<SettlementLine>, _>>()?;
    if let Some(expected) = expected_checksum {
        let found = checksum_like(&lines, expected);
        if found != expected {
            return Err(ArchiveError::Checksum {
                expected: expected.to_owned(),
                found,
            });
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::ResourceType;
    use crate::api::price_book::PriceUnit;
    use crate::api::settlement_report::ChecksumAlgorithm;
    use crate::billing::{checksum, checksum_with};

    fn line(n: u32, amount: &str) -> SettlementLine {
        SettlementLine {
            department: format!("dept-{}", n % 3).into(),
            provider: "aliyun-gov".into(),
            request: format!("ns/request-{n}").into(),
            item: "web".into(),
            sku: "ecs.c2.large".into(),
            resource_type: ResourceType::Ecs,
            from: "2026-10-01T00:00:00Z".parse().unwrap(),
            to: "2026-10-02T12:00:00Z".parse().unwrap(),
            quantity: rust_decimal::Decimal::from(n % 7),
            unit_price: "0.8".parse().unwrap(),
            unit: PriceUnit::Hour,
            per: None,
            discount_percent: rust_decimal::Decimal::ZERO,
            amount: amount.parse().unwrap(),
        }
    }

    proptest! {
        /// Whatever the chunk size, joining the chunks gives the lines back, checksum intact.
        #[test]
        fn chunks_round_trip(count in 0u32..200, chunk in 4usize..5_000, cents in 0u64..10_000_000) {
            let mut lines: Vec<SettlementLine> = (0..count)
                .map(|n| line(n, &format!("{}.{:02}", cents / 100 + u64::from(n), cents % 100)))
                .collect();
            crate::billing::sort_canonically(&mut lines);
            let sum = checksum(&lines);
            let chunks = encode(&lines, chunk);
            prop_assert!(chunks.iter().all(|c| c.len() <= chunk));
            prop_assert_eq!(decode(&chunks, Some(&sum)).unwrap(), lines);
        }
    }

    #[test]
    fn a_tampered_line_fails_the_checksum() {
        let lines = vec![line(1, "57.60")];
        let chunks = encode(&lines, CHUNK_CHARS);
        let other = checksum(&[line(1, "57.61")]);
        assert!(matches!(
            decode(&chunks, Some(&other)),
            Err(ArchiveError::Checksum { .. })
        ));
    }

    #[test]
    fn sm3_checksums_are_checked_with_sm3() {
        let lines = vec![line(1, "57.60"), line(2, "0.01")];
        let chunks = encode(&lines, CHUNK_CHARS);
        let sm3 = checksum_with(&lines, ChecksumAlgorithm::Sm3);
        assert!(sm3.starts_with("sm3:") && sm3.len() == 4 + 64, "{sm3}");
        assert_ne!(sm3[4..], checksum(&lines)[7..]);
        assert_eq!(decode(&chunks, Some(&sm3)).unwrap(), lines);
        let other = checksum_with(&[line(1, "57.60")], ChecksumAlgorithm::Sm3);
        assert!(matches!(
            decode(&chunks, Some(&other)),
            Err(ArchiveError::Checksum { .. })
        ));
    }
}
