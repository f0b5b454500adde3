//! API tokens: issued with a role, stored only as a hash, deleted, and the bootstrap token.

use diesel::prelude::*;

use super::{CreateToken, CreatedToken, TokenList, TokenView};
use crate::credentials::{generate_token, hash_token, Role};
use crate::db::models::TokenRow;
use crate::db::schema::admin_tokens;
use crate::db::{write_tx, DbConn};
use crate::domain::{audit, check_name};
use crate::error::StoreError;
use crate::ids::TokenId;

fn token_view(r: &TokenRow) -> TokenView {
    TokenView {
        id: r.id.clone(),
        name: r.name.clone(),
        role: r.role,
        created_at: r.created_at,
        last_used_at: r.last_used_at,
    }
}

/// Creates an admin API token.
pub fn create_token(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    input: CreateToken,
) -> Result<CreatedToken, StoreError> {
    let name = check_name("name", &input.name)?;
    let token = generate_token();
    let row = TokenRow {
        id: TokenId::generate(),
        name,
        role: input.role,
        token_hash: hash_token(&token),
        created_at: now,
        last_used_at: None,
    };
    write_tx(conn, |conn| {
        diesel::insert_into(admin_tokens::table)
            .values(&row)
            .execute(conn)?;
        let view = token_view(&row);
        audit::record(
            conn,
            now,
            actor,
            "token.create",
            &view.id,
            serde_json::json!({ "before": null, "after": view }),
        )?;
        Ok(CreatedToken {
            id: view.id,
            name: view.name,
            role: view.role,
            created_at: view.created_at,
            token,
        })
    })
}

/// Lists tokens.
pub fn list_tokens(conn: &mut DbConn) -> Result<TokenList, StoreError> {
    let rows: Vec<TokenRow> = admin_tokens::table
        .order(admin_tokens::id.asc())
        .load(conn)?;
    let items = rows.iter().map(token_view).collect();
    Ok(TokenList { items })
}

/// Deletes a token; it stops working at once (every request looks its hash up).
pub fn delete_token(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &TokenId,
) -> Result<(), StoreError> {
    write_tx(conn, |conn| {
        let row: TokenRow = admin_tokens::table
            .find(id)
            .first(conn)
            .optional()?
            .ok_or_else(|| StoreError::not_found("token", id))?;
        diesel::delete(admin_tokens::table.find(id)).execute(conn)?;
        audit::record(
            conn,
            now,
            actor,
            "token.delete",
            id,
            serde_json::json!({ "before": token_view(&row), "after": null }),
        )?;
        Ok(())
    })
}

/// Makes sure an owner token with exactly this value exists (`KEYGATE_BOOTSTRAP_TOKEN`).
pub fn ensure_bootstrap_token(conn: &mut DbConn, now: i64, token: &str) -> Result<(), StoreError> {
    let hash = hash_token(token);
    write_tx(conn, |conn| {
        let exists: i64 = admin_tokens::table
            .filter(admin_tokens::token_hash.eq(&hash))
            .count()
            .get_result(conn)?;
        if exists > 0 {
            return Ok(());
        }
        let row = TokenRow {
            id: TokenId::generate(),
            name: "bootstrap".to_owned(),
            role: Role::Owner,
            token_hash: hash.clone(),
            created_at: now,
            last_used_at: None,
        };
        // Replicas starting together may both get here: the token's hash is unique, and the
        // one that does not insert it has nothing to do (rather than failing its start).
        let insert = diesel::insert_into(admin_tokens::table)
            .values(&row)
            .on_conflict_do_nothing();
        if crate::with_backend!(conn, |c| insert.execute(c))? == 0 {
            return Ok(());
        }
        audit::record(
            conn,
            now,
            "system",
            "token.create",
            &row.id,
            serde_json::json!({ "before": null, "after": token_view(&row), "source": "KEYGATE_BOOTSTRAP_TOKEN" }),
        )?;
        Ok(())
    })
}
