//! The HorizontalPodAutoscaler `<name>-web`.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};

use super::Instance;
use crate::labels::Component;

/// Scales the web Deployment on average CPU utilization (autoscaling/v2).
pub fn build(instance: &Instance<'_>) -> HorizontalPodAutoscaler {
    let autoscaling = &instance.spec.autoscaling;
    HorizontalPodAutoscaler {
        metadata: instance.owned_meta(instance.web_name(), Component::Web),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: instance.web_name(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: autoscaling
                .scale_down_stabilization_window_seconds
                .map(|seconds| HorizontalPodAutoscalerBehavior {
                    scale_down: Some(HPAScalingRules {
                        stabilization_window_seconds: Some(seconds),
                        ..HPAScalingRules::default()
                    }),
                    ..HorizontalPodAutoscalerBehavior::default()
                }),
        },
        ..HorizontalPodAutoscaler::default()
    }
}
