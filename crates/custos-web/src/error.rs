//! Errors as HTTP responses: a status and a short JSON message that never
//! carries patient data (no attribute values, no file contents).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The backend that failed, if one did (counted by `/metrics`).
    pub failed: Option<Failed>,
}

/// Which backend a failed request could not use; put into the response's
/// extensions for the metering middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    Index,
    Store,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            failed: None,
        }
    }

    fn failed(mut self, backend: Failed) -> ApiError {
        self.failed = Some(backend);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not found")
    }
    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "your role does not allow this operation",
        )
    }
    pub fn internal(context: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %e, "{context}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, context.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(f) = self.failed {
            r.extensions_mut().insert(f);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // A backend or the audit trail is out: not at once again.
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Custos\", charset=\"UTF-8\""),
            );
            r.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"Custos\""),
            );
        }
        r
    }
}

impl From<custos_archive::registry::RegistryError> for ApiError {
    fn from(e: custos_archive::registry::RegistryError) -> ApiError {
        use custos_archive::registry::RegistryError as E;
        match e {
            E::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            E::Exists(m) => ApiError::new(StatusCode::CONFLICT, m),
            E::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            E::Index(e) => e.into(),
        }
    }
}

/// The access's record could not be written: refused, the client may retry.
impl From<custos_archive::audit::TrailUnavailable> for ApiError {
    fn from(e: custos_archive::audit::TrailUnavailable) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<custos_index::IndexError> for ApiError {
    fn from(e: custos_index::IndexError) -> ApiError {
        match e {
            custos_index::IndexError::BadQuery(m) => ApiError::bad_request(m),
            e @ custos_index::IndexError::LastAdmin => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            e => ApiError::internal("index failure", e).failed(Failed::Index),
        }
    }
}

impl From<custos_archive::RetrieveError> for ApiError {
    /// A stored instance that cannot be read into memory: too large (413, the
    /// whole instance can still be retrieved as stored) or broken (500).
    fn from(e: custos_archive::RetrieveError) -> ApiError {
        match e {
            custos_archive::RetrieveError::TooLarge(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "this instance is too large to take apart here; retrieve it whole",
            ),
            e @ custos_archive::RetrieveError::Store(_) => {
                ApiError::internal("reading a stored instance", e).failed(Failed::Store)
            }
            e => ApiError::internal("reading a stored instance", e),
        }
    }
}

impl From<custos_archive::view::ViewError> for ApiError {
    fn from(e: custos_archive::view::ViewError) -> ApiError {
        use custos_archive::view::ViewError as E;
        let status = match e {
            E::Read(r) => return r.into(),
            E::Internal { context, why } => return ApiError::internal(context, why),
            E::NoPixelData | E::NoSuchFrame | E::NoSuchAttribute | E::NotBulk => {
                StatusCode::NOT_FOUND
            }
            E::OverBudget { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            E::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        };
        ApiError::new(status, e.to_string())
    }
}
