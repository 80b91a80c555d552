//! Associations Custos opens to a registered peer (C-ECHO from the admin,
//! storage commitment reports on a new association): to the peer's one
//! address and port, over TLS when the peer is registered as requiring it.

/// Opens an association to `$peer` with dicom-ul client `$options`, over TLS
/// (`$tls`, an `Option<Arc<ClientConfig>>`) when the peer requires it, and
/// evaluates `$body` with the association bound to `$a`, for either stream
/// type. `Err(String)` says why no association was made.
macro_rules! with_peer_association {
    ($options:expr, $peer:expr, $tls:expr, |$a:ident| $body:expr) => {{
        let peer: &custos_core::peer::Peer = $peer;
        match peer.host.connect_host() {
            None => Err::<_, String>(
                "the peer is registered by network or pattern: there is no single address to call"
                    .into(),
            ),
            Some(_) if peer.port == 0 => {
                Err("the peer is registered without a port to call".into())
            }
            Some(host) => {
                let target = format!("{}@{}:{}", peer.ae_title, host, peer.port);
                if peer.tls_required {
                    match $tls {
                        None => {
                            Err("the peer requires TLS and DICOM TLS is not configured here".into())
                        }
                        Some(tls) => match $options
                            .tls_config(tls)
                            .server_name(&host)
                            .establish_with_async_tls(&target)
                            .await
                        {
                            Ok(mut $a) => {
                                $crate::outbound::no_delay(&mut $a);
                                Ok($body)
                            }
                            Err(e) => Err(format!("no association over TLS: {e}")),
                        },
                    }
                } else {
                    match $options.establish_with_async(&target).await {
                        Ok(mut $a) => {
                            $crate::outbound::no_delay(&mut $a);
                            Ok($body)
                        }
                        Err(e) => Err(format!("no association: {e}")),
                    }
                }
            }
        }
    }};
}

pub(crate) use with_peer_association;

/// Sends each write at once (a C-STORE is a command PDU then data PDUs:
/// with Nagle's algorithm on, the second waits for the peer's delayed ACK).
pub(crate) fn no_delay<S: crate::link::Stream, A: dicom_ul::association::AsyncAssociation<S>>(
    a: &mut A,
) {
    let _ = crate::quickack::Tcp::tcp(a.inner_stream()).set_nodelay(true);
}
