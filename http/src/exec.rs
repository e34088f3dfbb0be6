//! `POST /api/v0/code-exec`: codejail-service's view, check for check (docs/compat.md):
//! enabled, ready, then the form (urlencoded or multipart), `payload`, its JSON and schema,
//! `python_path`, the uploaded file names, `unsafely`; then `safe_exec` through the
//! broker, retried while the broker is busy for up to `queue_wait`.
//!
//! A client that disconnects drops this handler's future, which drops the broker
//! connection, which cancels the run (the broker's rule: a disconnect is a cancel).

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use codejail_client::pyjson::{Dict, Value};
use codejail_client::{safe_exec, ClientError, ErrorKind, SafeExecError, SafeExecOptions};

use crate::error::{json_response, ApiError};
use crate::metrics::{BusySource, InFlight, Outcome};
use crate::payload;
use crate::AppState;

/// The only file name and `python_path` entry accepted (what edx-platform sends).
pub const PYTHON_LIB: &str = "python_lib.zip";

/// upstream's `emsg` when the sandboxed code's stdout is not its globals.
const CORRUPTED_STDOUT: &str = "Sandboxed code produced corrupted stdout.";
/// upstream's `emsg` for any other failure of the run.
const SEE_LOGS: &str = "Couldn't execute sandboxed code: See logs.";

/// The most parts of a multipart form that are not files (Django's
/// `DATA_UPLOAD_MAX_NUMBER_FIELDS` default, which codejail-service runs with); more are
/// refused before they are read. edx-platform sends one, `payload`.
pub const MAX_FORM_FIELDS: usize = 1000;
/// The most file parts of a multipart form (Django's `DATA_UPLOAD_MAX_NUMBER_FILES`
/// default). edx-platform sends at most one, `python_lib.zip`.
pub const MAX_FORM_FILES: usize = 100;

/// The form as DRF's `request.data` and `request.FILES` see it.
#[derive(Debug, Default)]
struct Form {
    /// The last `payload` field.
    payload: Option<String>,
    /// `(field name, contents)` of each uploaded file, last wins per name, in the
    /// order of each name's last part.
    files: Vec<(String, Vec<u8>)>,
}

/// The handler.
pub async fn code_exec(State(state): State<AppState>, req: Request) -> Response {
    let _in_flight = InFlight::enter(&state.metrics.in_flight);
    match handle(&state, req).await {
        Ok(resp) => resp,
        Err(e) => {
            match e {
                ApiError::NotEnabled | ApiError::NotReady => state.metrics.count(Outcome::NotReady),
                // Counted where it was decided, with who was busy (count_busy).
                ApiError::Busy { .. } => {}
                _ => state.metrics.count(Outcome::Rejected),
            }
            axum::response::IntoResponse::into_response(e)
        }
    }
}

async fn handle(state: &AppState, req: Request) -> Result<Response, ApiError> {
    if !state.config.enabled {
        return Err(ApiError::NotEnabled);
    }
    if !state.readiness.is_ready() {
        return Err(ApiError::NotReady);
    }
    let form = read_form(req, state.config.max_body_bytes).await?;
    let text = form.payload.ok_or(ApiError::MissingPayload)?;
    let p = payload::parse(&text)?;
    if p.python_path.iter().any(|e| e != PYTHON_LIB) {
        return Err(ApiError::PythonPath);
    }
    if form.files.iter().any(|(name, _)| name != PYTHON_LIB) {
        return Err(ApiError::FileName);
    }
    if p.unsafely {
        return Err(ApiError::Unsafely);
    }

    // An entry of python_path with no uploaded file would make the client copy a file
    // of that name from the front's own directory: only uploaded files are offered.
    let python_path = p
        .python_path
        .iter()
        .filter(|e| form.files.iter().any(|(n, _)| n == *e))
        .map(Into::into)
        .collect();
    let opts = SafeExecOptions {
        files: Vec::new(),
        python_path,
        limits_context: p.limits_context.clone(),
        slug: p.slug.clone(),
        extra_files: form.files,
    };
    let deadline = state.config.run_deadline(
        &state.readiness.broker_limits(),
        p.limits_context.as_deref(),
    );
    let mut cfg = state.client.clone();
    cfg.queue_timeout = deadline;
    cfg.total_timeout = deadline;

    let started = Instant::now();
    let wait = state.config.queue_wait();
    let outcome = loop {
        let mut globals = p.globals.clone();
        match safe_exec(&cfg, &p.code, &mut globals, &opts).await {
            Err(SafeExecError::Client(e)) if is_busy(&e) => {
                let waited = started.elapsed();
                if waited >= wait {
                    state.metrics.count_busy(BusySource::Broker);
                    tracing::info!(slug = ?p.slug, "the broker stayed busy: 503");
                    return Err(busy(state));
                }
                tokio::time::sleep((wait - waited).min(std::time::Duration::from_millis(50))).await;
            }
            other => break other.map(|()| globals),
        }
    };
    state
        .metrics
        .run_seconds
        .observe(started.elapsed().as_secs_f64());

    let (globals, emsg) = match outcome {
        Ok(globals) => (globals, None),
        Err(SafeExecError::Exception(e)) => (p.globals, Some(e.message)),
        Err(SafeExecError::BadOutput { reason, .. }) => {
            tracing::warn!(slug = ?p.slug, %reason, "corrupted stdout from the jailed code");
            (p.globals, Some(CORRUPTED_STDOUT.to_string()))
        }
        Err(SafeExecError::Client(ClientError::Timeout(which))) => {
            // The broker did not finish within REALTIME + slack: most often the run
            // waited in its queue. Busy, not the code's fault.
            state.metrics.count_busy(BusySource::Broker);
            tracing::warn!(slug = ?p.slug, which, ?deadline, "deadline passed: 503");
            return Err(busy(state));
        }
        Err(SafeExecError::Client(
            e @ (ClientError::Connect { .. }
            | ClientError::Refused(_)
            | ClientError::VersionMismatch { .. }),
        )) => {
            tracing::error!(error = %e, "cannot reach the broker: not ready until it is back");
            state.readiness.broker_lost(&state.metrics);
            return Err(ApiError::NotReady);
        }
        Err(e) => {
            tracing::error!(slug = ?p.slug, error = %e, "the run failed");
            (p.globals, Some(SEE_LOGS.to_string()))
        }
    };
    let mut body = Dict::new();
    body.insert("globals_dict", Value::Dict(globals));
    if let Some(emsg) = emsg {
        state.metrics.count(Outcome::CodeError);
        body.insert("emsg", Value::from(emsg));
    } else {
        state.metrics.count(Outcome::Success);
    }
    Ok(json_response(StatusCode::OK, &Value::Dict(body)))
}

fn is_busy(e: &ClientError) -> bool {
    matches!(e.kind(), Some(ErrorKind::Busy | ErrorKind::ShuttingDown))
}

fn busy(state: &AppState) -> ApiError {
    ApiError::Busy {
        retry_after: state.config.retry_after(),
    }
}

/// The request's form, as DRF's `FormParser` / `MultiPartParser` read it. A declared
/// `Content-Length` over `limit` is refused before any of the body is read.
async fn read_form(req: Request, limit: usize) -> Result<Form, ApiError> {
    if declared_length(&req).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let media = content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => {
            let body = Bytes::from_request(req, &())
                .await
                .map_err(|e| body_error(e.status(), e.body_text(), limit))?;
            let mut form = Form::default();
            for (k, v) in form_urlencoded::parse(&body) {
                if k == "payload" {
                    form.payload = Some(v.into_owned());
                }
            }
            Ok(form)
        }
        Some("multipart/form-data") => {
            let mut multipart = Multipart::from_request(req, &())
                .await
                .map_err(|e| body_error(e.status(), e.body_text(), limit))?;
            let mut payload = None;
            // Per name, the index of its last part and its contents: one lookup per
            // part, whatever the number of parts.
            let mut files: HashMap<String, (usize, Bytes)> = HashMap::new();
            let (mut fields_seen, mut files_seen) = (0usize, 0usize);
            loop {
                let field = match multipart.next_field().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return Err(body_error(e.status(), e.body_text(), limit)),
                };
                let is_file = field.file_name().is_some();
                let (seen, max, what) = if is_file {
                    (&mut files_seen, MAX_FORM_FILES, "files")
                } else {
                    (&mut fields_seen, MAX_FORM_FIELDS, "fields")
                };
                *seen += 1;
                if *seen > max {
                    return Err(ApiError::TooManyParts { what, max });
                }
                let name = field.name().unwrap_or_default().to_string();
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| body_error(e.status(), e.body_text(), limit))?;
                if is_file {
                    files.insert(name, (files_seen, data));
                } else if name == "payload" {
                    payload = Some(String::from_utf8_lossy(&data).into_owned());
                }
            }
            let mut files: Vec<_> = files.into_iter().collect();
            files.sort_unstable_by_key(|(_, (last, _))| *last);
            Ok(Form {
                payload,
                files: files
                    .into_iter()
                    .map(|(name, (_, data))| (name, data.to_vec()))
                    .collect(),
            })
        }
        // DRF reads an empty body without a content type as an empty form.
        None if body_is_empty(&req) => Ok(Form::default()),
        _ => Err(ApiError::UnsupportedMediaType(
            content_type.unwrap_or_default(),
        )),
    }
}

/// The request's `Content-Length`, if it has a valid one (hyper refuses an invalid
/// one before the request gets here).
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn body_is_empty(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
}

/// A body that could not be read: too large (the body limit layer), or malformed.
fn body_error(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge(limit)
    } else {
        ApiError::MalformedBody(format!("Form parse error - {text}"))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use axum::body::Body;

    const BOUNDARY: &str = "b0undary";

    /// A multipart request of `(name, Some(file name) | None, contents)` parts.
    fn multipart(parts: &[(&str, Option<&str>, &str)]) -> Request {
        let mut body = String::new();
        for (name, file, contents) in parts {
            body.push_str(&format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\""
            ));
            if let Some(file) = file {
                body.push_str(&format!("; filename=\"{file}\""));
            }
            body.push_str(&format!("\r\n\r\n{contents}\r\n"));
        }
        body.push_str(&format!("--{BOUNDARY}--\r\n"));
        Request::builder()
            .method("POST")
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(body))
            .expect("a request")
    }

    #[tokio::test]
    async fn the_last_part_of_a_name_wins_and_files_keep_their_last_order() {
        let form = read_form(
            multipart(&[
                ("a", Some("a"), "1"),
                ("payload", None, "first"),
                ("b", Some("b"), "2"),
                ("a", Some("a"), "3"),
                ("payload", None, "last"),
                ("other", None, "x"),
            ]),
            1 << 20,
        )
        .await
        .expect("a valid form");
        assert_eq!(form.payload.as_deref(), Some("last"));
        assert_eq!(
            form.files,
            [
                ("b".to_string(), b"2".to_vec()),
                ("a".to_string(), b"3".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn parts_over_the_caps_are_refused() {
        let name = |i: usize| format!("f{i}");
        let names: Vec<String> = (0..=MAX_FORM_FIELDS).map(name).collect();
        let at_caps: Vec<(&str, Option<&str>, &str)> = names[..MAX_FORM_FIELDS]
            .iter()
            .map(|n| (n.as_str(), None, ""))
            .chain(
                names[..MAX_FORM_FILES]
                    .iter()
                    .map(|n| (n.as_str(), Some(n.as_str()), "")),
            )
            .collect();
        let form = read_form(multipart(&at_caps), 1 << 20)
            .await
            .expect("exactly at both caps");
        assert_eq!(form.files.len(), MAX_FORM_FILES);

        let mut files = at_caps.clone();
        files.push(("extra", Some("extra"), ""));
        let e = read_form(multipart(&files), 1 << 20)
            .await
            .expect_err("one file too many");
        assert_eq!(
            e.to_string(),
            "Form parse error - too many files: the limit is 100"
        );
        let mut fields = at_caps;
        fields.push(("extra", None, ""));
        let e = read_form(multipart(&fields), 1 << 20)
            .await
            .expect_err("one field too many");
        assert_eq!(
            e.to_string(),
            "Form parse error - too many fields: the limit is 1000"
        );
    }
}
