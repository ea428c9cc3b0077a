//! `Hub`: accounts, organisations and tokens.

use super::*;

impl Hub {
    /// Creates a user (site admin only), optionally as a member of an org.
    pub async fn create_user(&self, principal: &Principal, name: &str, org: Option<&str>) -> Result<Account> {
        let admin = principal.site_admin()?;
        let name = AccountName::parse(name)?;
        let org = org.map(AccountName::parse).transpose()?;
        if let Some(org) = &org {
            self.require_account(org, AccountKind::Org).await?;
        }
        let event = AuditEvent::new(&admin.name, "user.create", format!("user:{name}"), json!({ "org": org.as_ref().map(|o| o.to_string()) }));
        self.meta.create_account(&name, AccountKind::User, org.as_ref(), event).await
    }

    /// Creates an org (site admin only).
    pub async fn create_org(&self, principal: &Principal, name: &str) -> Result<Account> {
        let admin = principal.site_admin()?;
        let name = AccountName::parse(name)?;
        let event = AuditEvent::new(&admin.name, "org.create", format!("org:{name}"), json!({}));
        self.meta.create_account(&name, AccountKind::Org, None, event).await
    }

    /// Adds a user to an org (site admin only).
    pub async fn add_member(&self, principal: &Principal, org: &str, user: &str) -> Result<()> {
        let admin = principal.site_admin()?;
        let org = AccountName::parse(org)?;
        let user = AccountName::parse(user)?;
        self.require_account(&org, AccountKind::Org).await?;
        self.require_account(&user, AccountKind::User).await?;
        let event = AuditEvent::new(&admin.name, "org.add_member", format!("org:{org}"), json!({ "user": user.as_str() }));
        self.meta.add_member(&org, &user, event).await
    }

    pub(super) async fn require_account(&self, name: &AccountName, kind: AccountKind) -> Result<Account> {
        match self.meta.get_account(name).await? {
            Some(account) if account.kind == kind => Ok(account),
            _ => Err(Error::NotFound(format!("no {} named {name}", kind.as_str()))),
        }
    }

    /// Lists accounts (site admin only).
    pub async fn list_accounts(&self, principal: &Principal) -> Result<Vec<Account>> {
        principal.site_admin()?;
        self.meta.list_accounts().await
    }

    /// Creates a token. A site admin may create one for anyone; a user may create one for
    /// themselves with a role no higher than the token they use. Whoever creates it, a token
    /// never outlives the token it was created through (without an asked expiry it gets that
    /// token's), and revoking that token revokes it. Returns the secret once.
    pub async fn create_token(&self, principal: &Principal, user: &str, role: &str, name: Option<&str>, expires_in: Option<&str>) -> Result<(TokenInfo, String)> {
        let caller = principal.user()?;
        let user = AccountName::parse(user)?;
        let role = Role::parse(role)?;
        let is_site_admin = principal.site_admin().is_ok();
        if !is_site_admin && (caller.name != user.as_str() || role > caller.role) {
            return Err(Error::forbidden("only a site admin may create tokens for others or with a higher role"));
        }
        self.require_account(&user, AccountKind::User).await?;
        let asked = expires_in.map(parse_duration).transpose()?.map(|d| chrono::Utc::now() + d);
        let expires_at = match (asked, caller.token_expires_at) {
            (Some(asked), Some(limit)) if asked > limit => {
                return Err(Error::forbidden(format!("expires_in: a token may not outlive the token that creates it (which expires at {})", format_time(limit))));
            }
            (Some(asked), _) => Some(asked),
            (None, limit) => limit,
        }
        .map(format_time);
        let name = name.unwrap_or("cli");
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(Error::invalid("token name must be 1 to 100 printable characters"));
        }
        let secret = generate_token();
        let event = AuditEvent::new(&caller.name, "token.create", format!("user:{user}"), json!({ "name": name, "role": role.as_str(), "expires_at": expires_at }));
        let hash = hash_token(&secret);
        let token = crate::meta::NewToken { user: &user, name, role, hash: &hash, expires_at, parent: Some(caller.token_id) };
        let info = self.meta.create_token(token, event).await?;
        Ok((info, secret))
    }

    /// Revokes a token: a site admin any token, a user their own.
    pub async fn revoke_token(&self, principal: &Principal, id: i64) -> Result<TokenInfo> {
        let caller = principal.user()?;
        let token = self.meta.get_token(id).await?.ok_or_else(|| Error::NotFound(format!("no token with id {id}")))?;
        if principal.site_admin().is_err() && token.user_name != caller.name {
            return Err(Error::NotFound(format!("no token with id {id}")));
        }
        let event = AuditEvent::new(&caller.name, "token.revoke", format!("token:{id}"), json!({ "user": token.user_name }));
        self.meta.revoke_token(id, event).await
    }

    /// Lists tokens: all for a site admin, else the caller's own.
    pub async fn list_tokens(&self, principal: &Principal) -> Result<Vec<TokenInfo>> {
        let caller = principal.user()?;
        if principal.site_admin().is_ok() {
            self.meta.list_tokens(None).await
        } else {
            self.meta.list_tokens(Some(&AccountName::parse(&caller.name)?)).await
        }
    }
}
