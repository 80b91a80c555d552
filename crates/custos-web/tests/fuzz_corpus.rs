//! Replays the HTTP fuzz corpora (fuzz/corpus, kept in the repository,
//! grown by `scripts/fuzz`) on the stable toolchain.

#[test]
fn the_http_corpora_replay_without_panics() {
    assert!(replay("http_authorization", custos_web::fuzzing::authorization) > 0);
    assert!(replay("qido_query", custos_web::fuzzing::qido) > 0);
    assert!(replay("stow_multipart", custos_web::fuzzing::stow_body) > 0);
    assert!(replay("oidc_token", custos_web::fuzzing::bearer_token) > 0);
}

fn replay(target: &str, f: fn(&[u8])) -> usize {
    custos_archive::fuzzing::replay_corpus(target, f)
}
