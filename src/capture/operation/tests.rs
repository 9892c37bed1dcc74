use super::*;

fn name(method: Method, path: &str) -> String {
    classify(&method, path, None).name.into_owned()
}

#[test]
fn known_operations_under_any_prefix() {
    for prefix in ["", "/v1", "/openai/v1", "/api/v1", "/gateway/openai/v1"] {
        let p = |s: &str| format!("{prefix}{s}");
        assert_eq!(name(Method::POST, &p("/chat/completions")), "chat.create");
        assert_eq!(name(Method::POST, &p("/completions")), "completions.create");
        assert_eq!(name(Method::POST, &p("/embeddings")), "embeddings.create");
        assert_eq!(name(Method::POST, &p("/responses")), "responses.create");
        assert_eq!(name(Method::GET, &p("/models")), "models.list");
        assert_eq!(
            name(Method::POST, &p("/images/generations")),
            "images.generate"
        );
        assert_eq!(
            name(Method::POST, &p("/audio/transcriptions")),
            "audio.transcribe"
        );
        assert_eq!(name(Method::POST, &p("/moderations")), "moderations.create");
    }
}

#[test]
fn trailing_slashes_and_doubled_slashes_are_tolerated() {
    assert_eq!(name(Method::POST, "/v1/chat/completions/"), "chat.create");
    assert_eq!(name(Method::POST, "/v1//chat//completions"), "chat.create");
    assert_eq!(name(Method::GET, "/v1/models/"), "models.list");
}

#[test]
fn wrong_method_or_longer_path_falls_back_to_method_and_path() {
    assert_eq!(
        name(Method::GET, "/v1/chat/completions"),
        "GET /v1/chat/completions"
    );
    assert_eq!(
        name(Method::GET, "/v1/responses/resp_123"),
        "GET /v1/responses/resp_123"
    );
    assert_eq!(
        name(Method::POST, "/v1/responses/resp_123/cancel"),
        "POST /v1/responses/resp_123/cancel"
    );
    assert_eq!(
        name(Method::GET, "/v1/models/gpt-4o"),
        "GET /v1/models/gpt-4o"
    );
    assert_eq!(name(Method::DELETE, "/v1/files/f1"), "DELETE /v1/files/f1");
    assert_eq!(
        name(Method::POST, "/v1/audio/translations"),
        "POST /v1/audio/translations"
    );
}

#[test]
fn fallback_name_never_carries_the_query() {
    let op = classify(&Method::GET, "/v1/files?key=secret", Some("key=secret"));
    assert_eq!(op.name, "GET /v1/files");
}

#[test]
fn azure_deployment_and_api_version() {
    let op = classify(
        &Method::POST,
        "/openai/deployments/gpt-4o-prod/chat/completions",
        Some("api-version=2024-10-21"),
    );
    assert_eq!(
        op,
        Operation {
            name: "chat.create".into(),
            azure_deployment: Some("gpt-4o-prod".into()),
            api_version: Some("2024-10-21".into()),
        }
    );
    let op = classify(
        &Method::POST,
        "/openai/deployments/embed-small/embeddings",
        Some("?foo=1&API-Version=2024-02-01"),
    );
    assert_eq!(op.name, "embeddings.create");
    assert_eq!(op.azure_deployment.as_deref(), Some("embed-small"));
    assert_eq!(op.api_version.as_deref(), Some("2024-02-01"));

    let plain = classify(&Method::POST, "/v1/chat/completions", None);
    assert_eq!(plain.azure_deployment, None);
    assert_eq!(plain.api_version, None);
}

#[test]
fn azure_behind_a_gateway_prefix() {
    let op = classify(
        &Method::POST,
        "/azure/openai/deployments/d1/completions",
        Some("api-version=2024-10-21"),
    );
    assert_eq!(op.name, "completions.create");
    assert_eq!(op.azure_deployment.as_deref(), Some("d1"));
}

#[test]
fn providers() {
    assert_eq!(
        provider_for("api.openai.com", "/v1/chat/completions"),
        "openai"
    );
    assert_eq!(provider_for("API.OpenAI.com:443", "/v1/models"), "openai");
    assert_eq!(
        provider_for("myres.openai.azure.com", "/openai/v1/chat/completions"),
        "azure_openai"
    );
    assert_eq!(
        provider_for("myres.cognitiveservices.azure.com", "/x"),
        "azure_openai"
    );
    assert_eq!(
        provider_for("gateway.internal", "/openai/deployments/d/chat/completions"),
        "azure_openai"
    );
    assert_eq!(
        provider_for("localhost:8000", "/v1/chat/completions"),
        "openai_compatible"
    );
    assert_eq!(
        provider_for("[::1]:11434", "/v1/models"),
        "openai_compatible"
    );
    assert_eq!(
        provider_for("evil-api.openai.com.example", "/v1/models"),
        "openai_compatible"
    );
}

#[test]
fn paths_longer_than_the_stack_room_are_classified_alike() {
    // 16 segments fit on the stack; these take 15 to 40 (the prefix's).
    for depth in [13, 14, 15, 20, 38] {
        let prefix = "/x".repeat(depth);
        assert_eq!(
            name(Method::POST, &format!("{prefix}/chat/completions")),
            "chat.create",
            "{depth}"
        );
        let azure = classify(
            &Method::POST,
            &format!("{prefix}/openai/deployments/gpt4o/chat/completions"),
            None,
        );
        assert_eq!(azure.azure_deployment.as_deref(), Some("gpt4o"), "{depth}");
        assert_eq!(
            name(Method::POST, &format!("{prefix}/other")),
            format!("POST {prefix}/other")
        );
    }
}
