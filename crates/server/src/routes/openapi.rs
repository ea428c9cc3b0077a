//! The OpenAPI 3.1 document of Mantle's own API (admin, usage, quotas, deployments, vetting,
//! policies, audit), generated from the `api` types and the handlers' annotations, served at
//! `/openapi.json`. The Hub-compatible and OpenAI/Ollama-compatible routes follow their
//! upstreams' own documents and are not described here.

use axum::Json;
use utoipa::OpenApi as _;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Mantle", description = "Mantle's own API: accounts and tokens, deployments, usage and quotas, vetting and policies, the audit log. Authenticate with `Authorization: Bearer <token>`."),
    paths(
        super::admin::list_users,
        super::admin::create_user,
        super::admin::create_org,
        super::admin::add_member,
        super::admin::list_tokens,
        super::admin::create_token,
        super::admin::revoke_token,
        super::admin::gc,
        super::admin::export_audit,
        super::admin::verify_audit,
        super::admin::create_audit_checkpoint,
        super::admin::list_audit_checkpoints,
        super::admin::audit_public_key,
        super::admin::usage,
        super::admin::list_deployments,
        super::admin::create_deployment,
        super::admin::delete_deployment,
        super::release::list_routes,
        super::release::get_route,
        super::release::set_route,
        super::release::canary_route,
        super::release::shadow_route,
        super::release::promote_route,
        super::release::rollback_route,
        super::release::delete_route,
        super::release::route_history,
        super::pipelines::bind,
        super::pipelines::unbind,
        super::pipelines::bindings,
        super::pipelines::runs,
        super::pipelines::get_run,
        super::pipelines::cancel_run,
        super::admin::list_quotas,
        super::admin::set_quota,
        super::admin::delete_quota,
        super::vetting::revision_verdict,
        super::vetting::bom,
        super::vetting::get_policy,
        super::vetting::set_policy,
        super::vetting::list_overrides,
        super::vetting::add_override,
    )
)]
struct MantleApi;

/// The document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    MantleApi::openapi()
}

/// `GET /openapi.json`.
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
