//! The route table: method + path → [`Operation`], one line per EBS operation.
//!
//! Path labels are returned percent-decoded but otherwise unvalidated: whether a label is
//! a well-formed snapshot id or block index is the server's decision, because each has
//! its own error `Reason`.

use percent_encoding::percent_decode_str;

/// An EBS direct API operation with its path labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `POST /snapshots` → 201.
    StartSnapshot,
    /// `PUT /snapshots/{snapshotId}/blocks/{blockIndex}` → 201.
    PutSnapshotBlock {
        /// `snapshotId` label.
        snapshot_id: String,
        /// `blockIndex` label.
        block_index: String,
    },
    /// `POST /snapshots/completion/{snapshotId}` → 202.
    CompleteSnapshot {
        /// `snapshotId` label.
        snapshot_id: String,
    },
    /// `GET /snapshots/{snapshotId}/blocks` → 200.
    ListSnapshotBlocks {
        /// `snapshotId` label.
        snapshot_id: String,
    },
    /// `GET /snapshots/{secondSnapshotId}/changedblocks` → 200.
    ListChangedBlocks {
        /// `secondSnapshotId` label.
        second_snapshot_id: String,
    },
    /// `GET /snapshots/{snapshotId}/blocks/{blockIndex}` → 200.
    GetSnapshotBlock {
        /// `snapshotId` label.
        snapshot_id: String,
        /// `blockIndex` label.
        block_index: String,
    },
}

impl Operation {
    /// The operation's name as in the model.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::StartSnapshot => "StartSnapshot",
            Operation::PutSnapshotBlock { .. } => "PutSnapshotBlock",
            Operation::CompleteSnapshot { .. } => "CompleteSnapshot",
            Operation::ListSnapshotBlocks { .. } => "ListSnapshotBlocks",
            Operation::ListChangedBlocks { .. } => "ListChangedBlocks",
            Operation::GetSnapshotBlock { .. } => "GetSnapshotBlock",
        }
    }

    /// The HTTP status of a successful response.
    pub fn success_status(&self) -> u16 {
        match self {
            Operation::StartSnapshot | Operation::PutSnapshotBlock { .. } => 201,
            Operation::CompleteSnapshot { .. } => 202,
            _ => 200,
        }
    }

    /// The snapshot id label, if the operation has one (for logs).
    pub fn snapshot_label(&self) -> Option<&str> {
        match self {
            Operation::StartSnapshot => None,
            Operation::PutSnapshotBlock { snapshot_id, .. }
            | Operation::CompleteSnapshot { snapshot_id }
            | Operation::ListSnapshotBlocks { snapshot_id }
            | Operation::GetSnapshotBlock { snapshot_id, .. } => Some(snapshot_id),
            Operation::ListChangedBlocks { second_snapshot_id } => Some(second_snapshot_id),
        }
    }
}

/// Match a request line against the route table. `path` is the raw (still
/// percent-encoded) path without the query. `None`: no EBS operation has this shape.
pub fn route(method: &str, path: &str) -> Option<Operation> {
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .trim_end_matches('/')
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let labels: Vec<&str> = segments.iter().map(String::as_str).collect();
    let own = |s: &str| s.to_owned();
    match (method, labels.as_slice()) {
        ("POST", ["snapshots"]) => Some(Operation::StartSnapshot),
        ("POST", ["snapshots", "completion", id]) => Some(Operation::CompleteSnapshot {
            snapshot_id: own(id),
        }),
        ("PUT", ["snapshots", id, "blocks", index]) => Some(Operation::PutSnapshotBlock {
            snapshot_id: own(id),
            block_index: own(index),
        }),
        ("GET", ["snapshots", id, "blocks", index]) => Some(Operation::GetSnapshotBlock {
            snapshot_id: own(id),
            block_index: own(index),
        }),
        ("GET", ["snapshots", id, "blocks"]) => Some(Operation::ListSnapshotBlocks {
            snapshot_id: own(id),
        }),
        ("GET", ["snapshots", id, "changedblocks"]) => Some(Operation::ListChangedBlocks {
            second_snapshot_id: own(id),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request lines as they appear in the AWS API reference examples.
    #[test]
    fn aws_documentation_request_lines_route() {
        let cases = [
            ("POST", "/snapshots", "StartSnapshot"),
            (
                "PUT",
                "/snapshots/snap-0aaEXAMPLEe306d62/blocks/1",
                "PutSnapshotBlock",
            ),
            (
                "POST",
                "/snapshots/completion/snap-0aaEXAMPLEe306d62",
                "CompleteSnapshot",
            ),
            (
                "GET",
                "/snapshots/snap-0acEXAMPLEcf41648/blocks",
                "ListSnapshotBlocks",
            ),
            (
                "GET",
                "/snapshots/snap-0c9EXAMPLE1b30e2f/changedblocks",
                "ListChangedBlocks",
            ),
            (
                "GET",
                "/snapshots/snap-0c9EXAMPLE1b30e2f/blocks/3",
                "GetSnapshotBlock",
            ),
        ];
        for (method, path, name) in cases {
            let op = route(method, path).unwrap_or_else(|| panic!("{method} {path}"));
            assert_eq!(op.name(), name);
        }
    }

    #[test]
    fn labels_are_percent_decoded() {
        assert_eq!(
            route("PUT", "/snapshots/snap-1/blocks/%34%32"),
            Some(Operation::PutSnapshotBlock {
                snapshot_id: "snap-1".into(),
                block_index: "42".into()
            })
        );
    }

    #[test]
    fn other_shapes_do_not_route() {
        for (method, path) in [
            ("GET", "/snapshots"),
            ("DELETE", "/snapshots/snap-1/blocks/1"),
            ("POST", "/"),
            ("GET", "/snapshots/snap-1/other"),
            ("GET", "snapshots"),
            ("PUT", "/snapshots/snap-1/blocks/1/extra"),
        ] {
            assert_eq!(route(method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn success_codes_follow_the_model() {
        assert_eq!(Operation::StartSnapshot.success_status(), 201);
        let complete = Operation::CompleteSnapshot {
            snapshot_id: "snap-1".into(),
        };
        assert_eq!(complete.success_status(), 202);
    }
}
