//! AccountStore: accounts, organisations and tokens.

use super::*;

#[async_trait]
impl AccountStore for SqlMetaStore {
    async fn ensure_admin_token(&self, admin_name: &AccountName, token_hash: &str, rotate: bool) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT id FROM tokens WHERE hash = $1").bind(token_hash).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if exists.is_some() {
            return Ok(false);
        }
        let admin = match tx.account(admin_name).await? {
            Some(account) if account.kind == AccountKind::User && account.is_admin => account,
            Some(_) => return Err(Error::conflict(format!("{admin_name} exists but is not a site administrator"))),
            None => {
                let row = sqlx::query("INSERT INTO accounts (name, kind, is_admin, created_at) VALUES ($1, 'user', 1, $2) RETURNING id").bind(admin_name.as_str()).bind(now_rfc3339()).fetch_one(&mut *tx.tx).await.map_err(db_err)?;
                let id: i64 = row.try_get("id").map_err(db_err)?;
                tx.audit(&AuditEvent::new("system", "user.create", format!("user:{admin_name}"), serde_json::json!({ "admin": true }))).await?;
                Account { id, name: admin_name.clone(), kind: AccountKind::User, is_admin: true, created_at: now_rfc3339() }
            }
        };
        sqlx::query("INSERT INTO tokens (user_id, name, hash, role, created_at) VALUES ($1, 'bootstrap', $2, 'admin', $3)").bind(admin.id).bind(token_hash).bind(now_rfc3339()).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&AuditEvent::new("system", "token.create", format!("user:{admin_name}"), serde_json::json!({ "name": "bootstrap", "role": "admin" }))).await?;
        if rotate {
            let now = now_rfc3339();
            let rows =
                sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND name = 'bootstrap' AND hash <> $3 AND revoked_at IS NULL RETURNING id").bind(&now).bind(admin.id).bind(token_hash).fetch_all(&mut *tx.tx).await.map_err(db_err)?;
            for row in rows {
                let id: i64 = row.try_get("id").map_err(db_err)?;
                tx.audit(&AuditEvent::new("system", "token.revoke", format!("token:{id}"), serde_json::json!({ "user": admin_name.as_str(), "reason": "admin token rotated" }))).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn create_account(&self, name: &AccountName, kind: AccountKind, member_of: Option<&AccountName>, event: AuditEvent) -> Result<Account> {
        let mut tx = self.begin_write().await?;
        if tx.account(name).await?.is_some() {
            return Err(Error::conflict(format!("the name {name} is taken")));
        }
        let created_at = now_rfc3339();
        let row = sqlx::query("INSERT INTO accounts (name, kind, is_admin, created_at) VALUES ($1, $2, 0, $3) RETURNING id").bind(name.as_str()).bind(kind.as_str()).bind(&created_at).fetch_one(&mut *tx.tx).await.map_err(db_err)?;
        let id: i64 = row.try_get("id").map_err(db_err)?;
        tx.audit(&event).await?;
        if let Some(org) = member_of {
            let org = tx.account(org).await?.filter(|a| a.kind == AccountKind::Org).ok_or_else(|| Error::NotFound(format!("no org named {org}")))?;
            sqlx::query("INSERT INTO memberships (org_id, user_id, created_at) VALUES ($1, $2, $3)").bind(org.id).bind(id).bind(&created_at).execute(&mut *tx.tx).await.map_err(db_err)?;
            tx.audit(&AuditEvent::new(&event.actor, "org.add_member", format!("org:{}", org.name), serde_json::json!({ "user": name.as_str() }))).await?;
        }
        tx.commit().await?;
        Ok(Account { id, name: name.clone(), kind, is_admin: false, created_at })
    }

    async fn get_account(&self, name: &AccountName) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1");
        let row = sqlx::query(&sql).bind(name.as_str()).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| account_from_row(&row)).transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn add_member(&self, org: &AccountName, user: &AccountName, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let org_row = tx.account(org).await?.filter(|a| a.kind == AccountKind::Org).ok_or_else(|| Error::NotFound(format!("no org named {org}")))?;
        let user_row = tx.account(user).await?.filter(|a| a.kind == AccountKind::User).ok_or_else(|| Error::NotFound(format!("no user named {user}")))?;
        let existing = sqlx::query("SELECT 1 AS one FROM memberships WHERE org_id = $1 AND user_id = $2").bind(org_row.id).bind(user_row.id).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if existing.is_some() {
            return Err(Error::conflict(format!("{user} is already a member of {org}")));
        }
        sqlx::query("INSERT INTO memberships (org_id, user_id, created_at) VALUES ($1, $2, $3)").bind(org_row.id).bind(user_row.id).bind(now_rfc3339()).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn orgs_of(&self, user: &AccountName) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT o.name FROM memberships m JOIN accounts o ON o.id = m.org_id JOIN accounts u ON u.id = m.user_id WHERE u.name = $1 ORDER BY o.name").bind(user.as_str()).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(|row| row.try_get::<String, _>("name").map_err(db_err)).collect()
    }

    async fn create_token(&self, token: NewToken<'_>, event: AuditEvent) -> Result<TokenInfo> {
        let NewToken { user, name, role, hash: token_hash, expires_at, parent } = token;
        let mut tx = self.begin_write().await?;
        let account = tx.account(user).await?.filter(|a| a.kind == AccountKind::User).ok_or_else(|| Error::NotFound(format!("no user named {user}")))?;
        let created_at = now_rfc3339();
        let row = sqlx::query("INSERT INTO tokens (user_id, name, hash, role, created_at, expires_at, parent_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
            .bind(account.id)
            .bind(name)
            .bind(token_hash)
            .bind(role.as_str())
            .bind(&created_at)
            .bind(expires_at.clone())
            .bind(parent)
            .fetch_one(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        let id: i64 = row.try_get("id").map_err(db_err)?;
        let mut event = event;
        insert_detail(&mut event, "token_id", serde_json::json!(id));
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(TokenInfo { id, user_name: user.to_string(), name: name.to_owned(), role, created_at, expires_at, revoked_at: None })
    }

    async fn get_token(&self, id: i64) -> Result<Option<TokenInfo>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE t.id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| token_from_row(&row)).transpose()
    }

    async fn revoke_token(&self, id: i64, event: AuditEvent) -> Result<TokenInfo> {
        let mut tx = self.begin_write().await?;
        let now = now_rfc3339();
        let updated = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL").bind(&now).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(Error::conflict(format!("token {id} does not exist or is already revoked")));
        }
        // Tokens created through this one (and through those, transitively) go with it.
        let descendants = "WITH RECURSIVE tree(id) AS (SELECT id FROM tokens WHERE parent_id = $2 UNION SELECT t.id FROM tokens t JOIN tree ON t.parent_id = tree.id) \
                           UPDATE tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND id IN (SELECT id FROM tree)";
        let cascaded = sqlx::query(descendants).bind(&now).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?.rows_affected();
        let mut event = event;
        insert_detail(&mut event, "revoked_descendants", serde_json::json!(cascaded));
        tx.audit(&event).await?;
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE t.id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_one(&mut *tx.tx).await.map_err(db_err)?;
        let info = token_from_row(&row)?;
        tx.commit().await?;
        Ok(info)
    }

    async fn lookup_token(&self, token_hash: &str) -> Result<Option<TokenLookup>> {
        let sql = format!("SELECT {TOKEN_COLUMNS}, a.id AS user_id, a.is_admin FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE t.hash = $1");
        let Some(row) = sqlx::query(&sql).bind(token_hash).fetch_optional(&self.pool).await.map_err(db_err)? else {
            return Ok(None);
        };
        let token = token_from_row(&row)?;
        let user_id: i64 = row.try_get("user_id").map_err(db_err)?;
        let is_admin = row.try_get::<i64, _>("is_admin").map_err(db_err)? != 0;
        let orgs = self.orgs_of(&AccountName::parse(&token.user_name)?).await?;
        Ok(Some(TokenLookup { token, user_id, is_admin, orgs }))
    }

    async fn list_tokens(&self, user: Option<&AccountName>) -> Result<Vec<TokenInfo>> {
        let rows = match user {
            Some(user) => {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE a.name = $1 ORDER BY t.id");
                sqlx::query(&sql).bind(user.as_str()).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN accounts a ON a.id = t.user_id ORDER BY t.id");
                sqlx::query(&sql).fetch_all(&self.pool).await
            }
        }
        .map_err(db_err)?;
        rows.iter().map(token_from_row).collect()
    }
}
