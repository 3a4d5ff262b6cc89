//! Export with torchvision's parameter names.

mod common;

use selfsup::backbone::{BackboneConfig, ResNetConfig};
use selfsup::export::{export_safetensors, named_tensors, torchvision_name};

#[test]
fn resnet18_export_has_exactly_torchvisions_names_and_shapes() {
    let f = common::fixture("torchvision_resnet18_keys.json");
    let device = common::device();
    let backbone = BackboneConfig::ResNet(ResNetConfig::resnet18())
        .init(&device)
        .unwrap();
    let mut ours: Vec<(String, Vec<usize>)> = named_tensors(&backbone)
        .unwrap()
        .into_iter()
        .map(|t| (torchvision_name(&t.name), t.shape))
        .collect();
    ours.sort();
    // torchvision's keys without the classifier (`fc`), which a backbone does not have, and
    // the `num_batches_tracked` counters, which `load_state_dict(strict=False)` leaves alone.
    let mut theirs: Vec<(String, Vec<usize>)> = f["keys"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("fc.") && !k.ends_with("num_batches_tracked"))
        .map(|(k, v)| {
            let shape = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 100);

    // The file holds the same values.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r18.safetensors");
    export_safetensors(&backbone, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let conv = st.tensor("layer2.0.downsample.0.weight").unwrap();
    assert_eq!(conv.shape(), [128, 64, 1, 1]);
    let original = named_tensors(&backbone)
        .unwrap()
        .into_iter()
        .find(|t| torchvision_name(&t.name) == "layer2.0.downsample.0.weight")
        .unwrap();
    let stored: Vec<f32> = conv
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(stored, original.values);
}
