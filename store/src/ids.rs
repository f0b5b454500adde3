//! Prefixed, sortable ids: `prj_`, `key_`, `adm_`, `tok_`, `aud_` followed by a lowercase ULID,
//! so ids sort by creation time and cursors can be plain ids.

use std::sync::Mutex;

static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A new id with `prefix` (without the underscore).
pub fn new_id(prefix: &str) -> String {
    // A monotonic generator keeps ids made in the same millisecond in order.
    let ulid = match GENERATOR.lock() {
        Ok(mut g) => g
            .get_or_insert_with(ulid::Generator::new)
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::new()),
        Err(_) => ulid::Ulid::new(),
    };
    format!("{prefix}_{}", ulid.to_string().to_ascii_lowercase())
}

/// Declares an id newtype: a `String` with its prefix, stored and serialised as the plain
/// string (the API and the database are unchanged), so that a key id cannot be passed where a
/// project id is expected. It derefs to `str` for reading.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id's prefix, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new id.
            pub fn generate() -> Self {
                $name(new_id($prefix))
            }

            /// An id as given (a path segment, a cursor): not checked, since a lookup of a
            /// malformed id finds nothing and answers like any unknown id.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            /// The id.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as a `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                <String as diesel::deserialize::FromSql<diesel::sql_types::Text, DB>>::from_sql(
                    bytes,
                )
                .map($name)
            }
        }

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            String: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                self.0.to_sql(out)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .description(Some(concat!(
                        "`",
                        $prefix,
                        "_` followed by a lowercase ULID."
                    )))
                    .build()
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// `key_...`: an API key.
    KeyId,
    "key"
);
id_type!(
    /// `prj_...`: a project.
    ProjectId,
    "prj"
);
id_type!(
    /// `adm_...`: an admin.
    AdminId,
    "adm"
);
id_type!(
    /// `tok_...`: an API token.
    TokenId,
    "tok"
);
id_type!(
    /// `alr_...`: an alert.
    AlertId,
    "alr"
);
id_type!(
    /// `whk_...`: a webhook endpoint.
    WebhookId,
    "whk"
);
id_type!(
    /// `dlv_...`: a webhook delivery.
    DeliveryId,
    "dlv"
);
