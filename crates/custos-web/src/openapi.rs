//! The OpenAPI description of `/api` and `/dicom-web`, served at
//! `/api/openapi.json` (any authenticated user may read it).

use axum::Json;

pub async fn document() -> Json<serde_json::Value> {
    Json(serde_json::from_str(include_str!("openapi.json")).unwrap_or_default())
}
