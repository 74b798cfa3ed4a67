//! The EC2 Query API on `POST /`: the snapshot lifecycle operations backup tools call next
//! to the EBS direct APIs (coldsnap's `wait`, the aws CLI's `ec2 wait snapshot-completed`).
//! Both APIs read the same records through the same service, so their views agree.

mod describe_snapshots;
mod filters;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use strata_core::ServiceError;
use strata_core::snapshot::Tag;
use strata_sigv4::AuthError;
use strata_types::SnapshotId;
use strata_wire::ec2::{Ec2Error, Ec2ErrorCode, Params, Xml};

use crate::app::AppState;
use crate::auth::Caller;

/// The actions served.
const ACTIONS: [&str; 4] = [
    "DescribeSnapshots",
    "DeleteSnapshot",
    "CreateTags",
    "DeleteTags",
];

/// Run one EC2 action. `Err` carries the EC2 error to render.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    params: &Params,
    request_id: &str,
) -> Result<Response, Ec2Error> {
    let action = action(params)?;
    if params.flag("DryRun") {
        return Err(Ec2Error::new(
            Ec2ErrorCode::DryRunOperation,
            "Request would have succeeded, but DryRun flag is set.",
        ));
    }
    let xml = match action {
        "DescribeSnapshots" => {
            describe_snapshots::handle(state, caller, params, request_id).await?
        }
        "DeleteSnapshot" => delete_snapshot(state, caller, params, request_id).await?,
        "CreateTags" => create_tags(state, caller, params, request_id).await?,
        _ => delete_tags(state, caller, params, request_id).await?,
    };
    Ok(xml_response(StatusCode::OK, xml))
}

/// The `Action` parameter, if it names an action we serve.
pub fn action(params: &Params) -> Result<&'static str, Ec2Error> {
    let requested = params.get("Action").unwrap_or("");
    ACTIONS
        .iter()
        .find(|a| **a == requested)
        .copied()
        .ok_or_else(|| {
            Ec2Error::new(
                Ec2ErrorCode::InvalidAction,
                format!("The action '{requested}' is not valid for this web service."),
            )
        })
}

/// An XML response.
pub fn xml_response(status: StatusCode, xml: String) -> Response {
    let mut response = Response::new(Body::from(xml));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    response
}

/// The XML form of an EC2 error.
pub fn error_response(error: &Ec2Error, request_id: &str) -> Response {
    let status =
        StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    xml_response(status, error.body(request_id))
}

/// The EC2 error code of each service error (no wildcard: a new variant must be decided
/// here); the message is worded once, by [`crate::error::client_message`].
pub fn service_error(error: ServiceError) -> Ec2Error {
    let message = crate::error::client_message(&error);
    let code = match &error {
        ServiceError::SnapshotNotFound(_) => Ec2ErrorCode::InvalidSnapshotNotFound,
        ServiceError::TagLimitExceeded(_) => Ec2ErrorCode::TagLimitExceeded,
        ServiceError::InvalidParameter(_)
        | ServiceError::NotPending { .. }
        | ServiceError::ParentNotCompleted { .. }
        | ServiceError::WrongBlockSize { .. }
        | ServiceError::BlockChecksumMismatch
        | ServiceError::ChangedBlocksCountMismatch { .. }
        | ServiceError::AggregateChecksumMismatch { .. }
        | ServiceError::InvalidVolumeSize(_)
        | ServiceError::InvalidTag(_)
        | ServiceError::InvalidBlock(_)
        | ServiceError::InvalidBlockToken(_)
        | ServiceError::InvalidPageToken(_)
        | ServiceError::UnrelatedSnapshots { .. }
        | ServiceError::IdempotencyConflict(_)
        | ServiceError::ConflictingBlockUpdate(_)
        | ServiceError::InvalidCustomerKey(_)
        | ServiceError::KeyAccessDenied(_)
        | ServiceError::PendingSnapshotLimit(_) => Ec2ErrorCode::InvalidParameterValue,
        ServiceError::CorruptData(_) | ServiceError::Store(_) => {
            tracing::error!(error = %crate::error::ErrorChain(&error), "EC2 request failed inside");
            return Ec2Error::new(
                Ec2ErrorCode::InternalError,
                "An internal error has occurred; retry later.",
            );
        }
    };
    Ec2Error::new(code, message)
}

/// The EC2 form of an authentication failure.
pub fn auth_error(error: &AuthError) -> Ec2Error {
    let code = match error {
        AuthError::MissingAuthentication | AuthError::UnknownAccessKey => Ec2ErrorCode::AuthFailure,
        AuthError::Malformed(_) => Ec2ErrorCode::IncompleteSignature,
        AuthError::Expired { .. } => Ec2ErrorCode::RequestExpired,
        AuthError::SignatureMismatch
        | AuthError::MissingContentSha256
        | AuthError::ContentSha256Mismatch => Ec2ErrorCode::SignatureDoesNotMatch,
    };
    let message = match error {
        AuthError::MissingAuthentication | AuthError::UnknownAccessKey => {
            "AWS was not able to validate the provided access credentials".to_owned()
        }
        other => other.to_string(),
    };
    Ec2Error::new(code, message)
}

/// Parse a snapshot id parameter the EC2 way.
fn snapshot_id(text: &str) -> Result<SnapshotId, Ec2Error> {
    SnapshotId::parse(text).map_err(|_| {
        Ec2Error::new(
            Ec2ErrorCode::InvalidSnapshotIdMalformed,
            format!("Invalid id: \"{text}\" (expecting \"snap-...\")"),
        )
    })
}

/// Resource ids of CreateTags/DeleteTags: snapshots are the only resources here.
fn resource_ids(params: &Params) -> Result<Vec<SnapshotId>, Ec2Error> {
    let ids = params.list("ResourceId");
    if ids.is_empty() {
        return Err(Ec2Error::new(
            Ec2ErrorCode::MissingParameter,
            "The request must contain the parameter resourceIdSet",
        ));
    }
    ids.iter()
        .map(|id| {
            if id.starts_with("snap-") {
                snapshot_id(id)
            } else {
                Err(Ec2Error::new(
                    Ec2ErrorCode::InvalidId,
                    format!("The ID '{id}' is not valid: only snapshots can be tagged here."),
                ))
            }
        })
        .collect()
}

async fn delete_snapshot(
    state: &AppState,
    caller: &Caller,
    params: &Params,
    request_id: &str,
) -> Result<String, Ec2Error> {
    let id = params.get("SnapshotId").ok_or_else(|| {
        Ec2Error::new(
            Ec2ErrorCode::MissingParameter,
            "The request must contain the parameter SnapshotId",
        )
    })?;
    let id = snapshot_id(id)?;
    state
        .service
        .delete_snapshot(&caller.account, &id)
        .await
        .map_err(service_error)?;
    Ok(return_true("DeleteSnapshot", request_id))
}

async fn create_tags(
    state: &AppState,
    caller: &Caller,
    params: &Params,
    request_id: &str,
) -> Result<String, Ec2Error> {
    let ids = resource_ids(params)?;
    let mut tags = Vec::new();
    for tag in params.structs("Tag") {
        let key = tag.get("Key").unwrap_or("").to_owned();
        if key.starts_with("aws:") {
            return Err(Ec2Error::new(
                Ec2ErrorCode::InvalidParameterValue,
                format!("Tag keys starting with 'aws:' are reserved for internal use: '{key}'."),
            ));
        }
        tags.push(Tag {
            key,
            value: tag.get("Value").unwrap_or("").to_owned(),
        });
    }
    if tags.is_empty() {
        return Err(Ec2Error::new(
            Ec2ErrorCode::MissingParameter,
            "The request must contain the parameter tagSet",
        ));
    }
    state
        .service
        .create_tags(&caller.account, &ids, &tags)
        .await
        .map_err(service_error)?;
    Ok(return_true("CreateTags", request_id))
}

async fn delete_tags(
    state: &AppState,
    caller: &Caller,
    params: &Params,
    request_id: &str,
) -> Result<String, Ec2Error> {
    let ids = resource_ids(params)?;
    let keys: Vec<(String, Option<String>)> = params
        .structs("Tag")
        .iter()
        .map(|tag| {
            (
                tag.get("Key").unwrap_or("").to_owned(),
                tag.get("Value").map(str::to_owned),
            )
        })
        .collect();
    state
        .service
        .delete_tags(&caller.account, &ids, &keys)
        .await
        .map_err(service_error)?;
    Ok(return_true("DeleteTags", request_id))
}

fn return_true(action: &str, request_id: &str) -> String {
    let mut xml = Xml::response(action, request_id);
    xml.leaf("return", "true");
    xml.close(&format!("{action}Response"));
    xml.finish()
}
