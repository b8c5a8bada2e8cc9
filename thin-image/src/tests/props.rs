//! Property tests: random descriptors round-trip; altered catalog ids are
//! refused.

use super::*;

fn hex64() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 32).prop_map(hex::encode)
}

fn opt_list() -> impl Strategy<Value = Option<Vec<String>>> {
    proptest::option::of(proptest::collection::vec(any::<String>(), 0..4))
}

fn runtime_config() -> impl Strategy<Value = RuntimeConfig> {
    (
        proptest::collection::vec(any::<String>(), 0..4),
        opt_list(),
        opt_list(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::collection::vec("[0-9]{1,5}/(tcp|udp)", 0..3),
        proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4),
        proptest::option::of("SIG[A-Z]{2,6}"),
    )
        .prop_map(
            |(env, entrypoint, cmd, working_dir, user, exposed_ports, labels, stop_signal)| {
                RuntimeConfig {
                    env,
                    entrypoint,
                    cmd,
                    working_dir,
                    user,
                    exposed_ports,
                    labels,
                    stop_signal,
                }
            },
        )
}

fn layer() -> impl Strategy<Value = LayerTree> {
    (hex64(), hex64(), hex64(), any::<u64>()).prop_map(|(d, diff, catalog, size)| LayerTree {
        digest: format!("sha256:{d}"),
        diff_id: format!("sha256:{diff}"),
        path: format!("/layers/{}/{diff}", &diff[..2]),
        catalog,
        size,
    })
}

pub(super) fn thin_image() -> impl Strategy<Value = ThinImage> {
    let platform = (
        "[A-Za-z0-9._-]{1,12}",
        "[A-Za-z0-9._-]{1,12}",
        proptest::option::of("[A-Za-z0-9._-]{1,8}"),
    )
        .prop_map(|(os, architecture, variant)| Platform {
            os,
            architecture,
            variant,
        });
    let repository = (
        "[A-Za-z0-9._-]{1,40}",
        proptest::collection::btree_set(
            "https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[A-Za-z0-9._~%-]{0,10}){0,3}",
            1..4,
        ),
        hex64(),
        1..=u64::MAX,
    )
        .prop_map(|(name, urls, fp, revision)| RepositoryRef {
            name,
            urls: urls.into_iter().collect(),
            public_key_fingerprint: fp,
            revision,
        });
    (
        "[a-z0-9][a-z0-9._-]{0,10}(/[a-z0-9_][a-z0-9._-]{0,10}){0,3}:[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        hex64(),
        platform,
        runtime_config(),
        repository,
        hex64(),
        proptest::collection::vec(layer(), 0..5),
        proptest::collection::btree_set("(/[^/\\x00.][^/\\x00]{0,10}){1,4}", 0..5),
    )
        .prop_map(
            |(image, manifest_hex, platform, config, repository, flat_catalog, layers, files)| {
                ThinImage {
                    schema_version: SCHEMA_VERSION,
                    media_type: MEDIA_TYPE.into(),
                    image,
                    manifest_digest: format!("sha256:{manifest_hex}"),
                    platform,
                    config,
                    repository,
                    flat: FlatTree {
                        path: format!("/flat/{}/{manifest_hex}", &manifest_hex[..2]),
                        catalog: flat_catalog,
                    },
                    layers,
                    prioritized_files: files.into_iter().collect(),
                }
            },
        )
}

proptest! {
    #[test]
    fn random_descriptor_round_trips(t in thin_image()) {
        let json = t.to_json_pretty().unwrap();
        let back = ThinImage::from_json(json.as_bytes()).unwrap();
        prop_assert_eq!(&back, &t);
        // Compact JSON too.
        let compact = serde_json::to_vec(&t).unwrap();
        prop_assert_eq!(ThinImage::from_json(&compact).unwrap(), t);
    }

    #[test]
    fn altered_catalog_ids_are_refused(
        t in thin_image(),
        which in any::<prop::sample::Index>(),
        pos in 0usize..64,
        bad in prop::sample::select(vec!['A', 'F', 'g', 'z', ' ', '-', 'é']),
    ) {
        let mut t = t;
        let n = t.layers.len() + 1;
        let i = which.index(n);
        let id = if i == 0 { &mut t.flat.catalog } else { &mut t.layers[i - 1].catalog };
        let mut chars: Vec<char> = id.chars().collect();
        chars[pos] = bad;
        *id = chars.into_iter().collect();
        let json = serde_json::to_vec(&t).unwrap();
        let e = ThinImage::from_json(&json).unwrap_err();
        let field = if i == 0 { "flat.catalog".to_string() } else { format!("layers[{}].catalog", i - 1) };
        prop_assert!(e.to_string().contains(&field), "{}", e);
    }
}
