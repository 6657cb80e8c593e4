//! Bearer-token check on the store service.

use std::sync::Arc;

use proxystore::Error;
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every call when a token is configured.
///
/// The comparison takes the same time wherever the first differing byte is, so the token
/// cannot be guessed byte by byte from response times.
#[derive(Clone)]
pub(crate) struct BearerAuth {
    expected: Option<Arc<[u8]>>,
}

impl BearerAuth {
    pub(crate) fn new(token: Option<&str>) -> Self {
        BearerAuth {
            expected: token.map(|t| Arc::from(format!("Bearer {t}").into_bytes())),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let message = match request.metadata().get("authorization") {
            None => "missing `authorization: Bearer <token>` metadata",
            Some(given) if bool::from(given.as_bytes().ct_eq(expected)) => return Ok(request),
            Some(_) => "wrong bearer token",
        };
        Err(Status::from(Error::Unauthorized {
            message: message.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            r.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        r
    }

    #[test]
    fn accepts_only_the_right_token() {
        let mut a = BearerAuth::new(Some("t0k"));
        assert!(a.call(with_auth(Some("Bearer t0k"))).is_ok());
        for bad in [
            None,
            Some("Bearer t0"),
            Some("Bearer t0k2"),
            Some("t0k"),
            Some("bearer t0k"),
        ] {
            let e = a.call(with_auth(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let mut open = BearerAuth::new(None);
        assert!(open.call(with_auth(None)).is_ok());
    }
}
