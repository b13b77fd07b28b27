use kube::core::CustomResourceExt;
use serde_json::{Value, json};

use super::*;

fn crd_json() -> Value {
    serde_json::to_value(FlaskMongoApp::crd()).expect("the CRD serializes")
}

fn spec_schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn empty_spec_takes_the_documented_defaults() {
    let spec: FlaskMongoAppSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(
        spec.web.image,
        format!("flaskmongo/webapp:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(spec.web.image_pull_policy, ImagePullPolicy::IfNotPresent);
    assert_eq!(
        (spec.web.replicas, spec.web.port, spec.web.service.port),
        (2, 5000, 80)
    );
    assert_eq!(spec.web.service.node_port, None);
    assert_eq!(
        spec.web.resources.requests,
        ResourceAmounts::new("250m", "64Mi")
    );
    assert_eq!(
        spec.web.resources.limits,
        ResourceAmounts::new("500m", "128Mi")
    );
    assert_eq!(
        spec.autoscaling,
        AutoscalingSpec {
            enabled: true,
            min_replicas: 2,
            max_replicas: 5,
            target_cpu_utilization_percentage: 70,
            scale_down_stabilization_window_seconds: None
        }
    );
    assert!(spec.mongo.image.starts_with("mongo:7.0."));
    assert_eq!(spec.mongo.storage.size, "1Gi");
    assert_eq!(spec.mongo.storage.storage_class_name, "manual");
    assert_eq!(
        spec.mongo.storage.persistent_volume,
        PersistentVolumeSpec { create: true }
    );
    assert_eq!(spec.mongo.storage.deletion_policy, DeletionPolicy::Retain);
    assert!(!spec.paused);
    assert_eq!(spec, FlaskMongoAppSpec::default());
}

#[test]
fn the_schema_carries_the_defaults() {
    let web = &spec_schema()["properties"]["web"];
    assert_eq!(web["properties"]["replicas"]["default"], json!(2));
    assert_eq!(
        web["properties"]["image"]["default"],
        json!(DEFAULT_WEB_IMAGE)
    );
    assert_eq!(
        web["properties"]["imagePullPolicy"]["default"],
        json!("IfNotPresent")
    );
    assert_eq!(
        web["properties"]["service"]["properties"]["port"]["default"],
        json!(80)
    );
    assert_eq!(
        web["properties"]["resources"]["default"]["requests"]["cpu"],
        json!("250m")
    );
    let autoscaling = &spec_schema()["properties"]["autoscaling"]["properties"];
    assert_eq!(
        autoscaling["targetCPUUtilizationPercentage"]["default"],
        json!(70)
    );
    let storage = &spec_schema()["properties"]["mongo"]["properties"]["storage"]["properties"];
    assert_eq!(storage["size"]["default"], json!("1Gi"));
    assert_eq!(storage["deletionPolicy"]["default"], json!("Retain"));
    assert_eq!(
        spec_schema()["properties"]["paused"]["default"],
        json!(false)
    );
}

#[test]
fn the_schema_carries_the_validation_rules() {
    let text = crd_json().to_string();
    for needle in [
        "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
        "mongo.storage.size is immutable",
        "mongo.storage.persistentVolume.create is immutable",
        "web.resources.requests.cpu is required",
        "metadata.name must be at most 46 characters",
    ] {
        assert!(text.contains(needle), "the CRD lacks the rule {needle:?}");
    }
    let node_port =
        &spec_schema()["properties"]["web"]["properties"]["service"]["properties"]["nodePort"];
    assert_eq!(
        (node_port["minimum"].as_f64(), node_port["maximum"].as_f64()),
        (Some(30000.0), Some(32767.0))
    );
    let target =
        &spec_schema()["properties"]["autoscaling"]["properties"]["targetCPUUtilizationPercentage"];
    assert_eq!(
        (target["minimum"].as_f64(), target["maximum"].as_f64()),
        (Some(1.0), Some(100.0))
    );
}

/// The API server refuses a schema that is not structural: every node needs a type, and
/// nothing may preserve unknown fields (so that unknown fields are refused).
#[test]
fn the_schema_is_structural_and_closed() {
    fn walk(path: &str, node: &Value) {
        let object = node
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not a schema object"));
        for key in [
            "anyOf",
            "oneOf",
            "allOf",
            "$ref",
            "x-kubernetes-preserve-unknown-fields",
        ] {
            assert!(!object.contains_key(key), "{path} has {key}");
        }
        assert!(object.contains_key("type"), "{path} has no type");
        if let Some(properties) = object.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                walk(&format!("{path}.{name}"), child);
            }
        }
        if let Some(items) = object.get("items") {
            walk(&format!("{path}[]"), items);
        }
    }
    let root = crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    walk("", &root["properties"]["spec"]);
    walk("", &root["properties"]["status"]);
}

#[test]
fn names_columns_and_subresources() {
    let crd = crd_json();
    assert_eq!(
        crd["metadata"]["name"],
        json!("flaskmongoapps.flaskmongo.dev")
    );
    assert_eq!(crd["spec"]["scope"], json!("Namespaced"));
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["fma"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], json!("v1alpha1"));
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Ready", "Web", "Mongo", "NodePort", "Age"]);
}

#[test]
fn spec_round_trips_through_json() {
    let mut spec = FlaskMongoAppSpec::default();
    spec.web.service.node_port = Some(30080);
    spec.web.env.push(EnvVar {
        name: "GREETING".into(),
        value: "hi".into(),
    });
    spec.mongo.storage.deletion_policy = DeletionPolicy::Delete;
    let text = serde_json::to_string(&spec).unwrap();
    assert!(text.contains("\"targetCPUUtilizationPercentage\":70"));
    assert_eq!(
        serde_json::from_str::<FlaskMongoAppSpec>(&text).unwrap(),
        spec
    );
}

#[test]
fn users_cannot_choose_a_host_path() {
    let schema = &crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let volume = &schema["properties"]["spec"]["properties"]["mongo"]["properties"]["storage"]["properties"]
        ["persistentVolume"];
    let fields: Vec<&String> = volume["properties"].as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        ["create"],
        "an unknown field such as hostPath is refused by the API server"
    );
}
