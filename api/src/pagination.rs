//! DRF's page-number pagination: `{"count", "next", "previous", "results"}`, 10 a page,
//! `?page=N`, `?page_size=` up to 100, absolute `next`/`previous` links, 404 past the end.

use axum::http::{HeaderMap, Uri, header};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::input::Params;

/// Items a page unless `page_size` says otherwise.
pub const DEFAULT_PAGE_SIZE: i64 = 10;
/// Largest `page_size`.
pub const MAX_PAGE_SIZE: i64 = 100;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// How many items match, on all pages.
    pub count: i64,
    /// The next page's URL, or null on the last.
    pub next: Option<String>,
    /// The previous page's URL, or null on the first.
    pub previous: Option<String>,
    /// This page's items.
    pub results: Vec<T>,
}

/// Which page a request asks for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// 1-based page number.
    pub page: i64,
    /// Items a page.
    pub size: i64,
}

impl PageRequest {
    /// Reads `page` and `page_size`; bad values are recorded on `params`.
    pub fn from_params(params: &mut Params) -> PageRequest {
        let page = params
            .positive_int("page", i64::MAX / MAX_PAGE_SIZE)
            .unwrap_or(1);
        let size = params
            .positive_int("page_size", MAX_PAGE_SIZE)
            .unwrap_or(DEFAULT_PAGE_SIZE);
        PageRequest { page, size }
    }

    /// Rows to skip.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.size
    }

    /// 404 for a page past the end (the first page always exists, even empty).
    pub fn check_exists(&self, count: i64) -> Result<(), ApiError> {
        if self.page > 1 && self.offset() >= count {
            Err(ApiError::InvalidPage)
        } else {
            Ok(())
        }
    }

    /// The page, with links built from the request's own URL.
    pub fn page<T>(&self, count: i64, results: Vec<T>, uri: &Uri, headers: &HeaderMap) -> Page<T> {
        let has_next = self.offset() + self.size < count;
        let link = |page: i64| page_url(uri, headers, page);
        Page {
            count,
            next: has_next.then(|| link(self.page + 1)),
            previous: (self.page > 1).then(|| link(self.page - 1)),
            results,
        }
    }
}

/// The request's absolute URL with `page` set to `page` (removed for page 1, as DRF does).
fn page_url(uri: &Uri, headers: &HeaderMap, page: i64) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    let mut pairs: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    pairs.retain(|(key, _)| key != "page");
    if page > 1 {
        pairs.push(("page".to_owned(), page.to_string()));
    }
    // Links keep the original's trailing slash, whichever form the client used.
    let path = uri.path();
    let slash = if path.ends_with('/') { "" } else { "/" };
    let mut url = format!("{scheme}://{host}{path}{slash}");
    if !pairs.is_empty() {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        url.push('?');
        url.push_str(&query);
    }
    url
}
