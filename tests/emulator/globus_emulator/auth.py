# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Globus Auth emulation: the OAuth2 token endpoint, codes, revocation, introspection, consents.

The Transfer side needs to know *who* calls (task ownership, per-user limits) and *which
dependent consents* the caller granted (GCSv5 mapped collections need the
``https://auth.globus.org/scopes/<collection>/data_access`` dependency of the transfer
scope).  So tokens here are opaque strings mapped to a grant that records the identity, the
resource server and the parsed scope tree, the way Globus Auth scopes a token.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field

from .util import APIError, OAuthError, now

TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
TRANSFER_RS = "transfer.api.globus.org"
AUTH_RS = "auth.globus.org"
AUTH_SCOPES = {
    "openid",
    "profile",
    "email",
    "urn:globus:auth:scope:auth.globus.org:view_identities",
    "urn:globus:auth:scope:auth.globus.org:manage_projects",
}
DATA_ACCESS_RE = re.compile(r"^https://auth\.globus\.org/scopes/([0-9a-fA-F-]{36})/data_access$")
CODE_LIFETIME = 600
DEFAULT_USER = "emulator-user@globusid.org"


def data_access_scope(collection_id):
    return f"https://auth.globus.org/scopes/{collection_id}/data_access"


# ---------------------------------------------------------------- scope strings


@dataclass
class Scope:
    """One node of a Globus scope string such as ``A[*B C[D]]``."""

    name: str
    optional: bool = False
    deps: list = field(default_factory=list)

    def __str__(self):
        text = ("*" if self.optional else "") + self.name
        if self.deps:
            text += "[" + " ".join(str(d) for d in self.deps) + "]"
        return text


def parse_scopes(text):
    """Parse a space-separated scope string with ``[...]`` dependencies and ``*`` optional marks."""
    tokens = re.findall(r"\[|\]|[^\s\[\]]+", text or "")
    pos = 0

    def parse_list(closing):
        nonlocal pos
        out = []
        while pos < len(tokens):
            tok = tokens[pos]
            if tok == "]":
                if not closing:
                    raise ValueError("unbalanced ']' in scope string")
                pos += 1
                return out
            if tok == "[":
                raise ValueError("dependency list without a parent scope")
            pos += 1
            optional = tok.startswith("*")
            scope = Scope(tok[1:] if optional else tok, optional)
            if not scope.name:
                raise ValueError("empty scope name")
            if pos < len(tokens) and tokens[pos] == "[":
                pos += 1
                scope.deps = parse_list(True)
            out.append(scope)
        if closing:
            raise ValueError("unbalanced '[' in scope string")
        return out

    return parse_list(False)


def resource_server_for(scope_name):
    if scope_name == TRANSFER_SCOPE:
        return TRANSFER_RS
    if scope_name in AUTH_SCOPES:
        return AUTH_RS
    match = DATA_ACCESS_RE.match(scope_name)
    if match:
        return match.group(1).lower()
    return None


# ---------------------------------------------------------------- records


@dataclass
class Identity:
    id: str
    username: str


@dataclass
class Grant:
    """What one token stands for: an identity, a client, a resource server and its scopes."""

    client_id: str
    identity: Identity
    resource_server: str
    scopes: list

    @property
    def scope_string(self):
        return " ".join(str(s) for s in self.scopes)

    @property
    def data_access(self):
        """Collection ids whose data_access dependency was consented on the transfer scope."""
        ids = set()
        for scope in self.scopes:
            for dep in scope.deps:
                match = DATA_ACCESS_RE.match(dep.name)
                if match:
                    ids.add(match.group(1).lower())
        return ids


@dataclass
class AccessToken:
    token: str
    grant: Grant
    issued_at: float
    expires_at: float
    active: bool = True


@dataclass
class RefreshToken:
    token: str
    grant: Grant
    active: bool = True


@dataclass
class AuthCode:
    code: str
    client_id: str
    identity: Identity
    scope_text: str
    challenge: str | None
    challenge_method: str
    redirect_uri: str | None
    offline: bool
    state: str | None
    expires_at: float


# ---------------------------------------------------------------- service


class AuthService:
    """Issues and validates tokens.  All public methods are thread-safe."""

    def __init__(self, config):
        self.lock = threading.Lock()
        self.confidential = {str(c["client_id"]): c for c in config.get("clients", [])}
        self.native = {str(c["client_id"]): c for c in config.get("native_clients", [])}
        users = config.get("users") or [{"username": DEFAULT_USER}]
        self.users = {}
        for user in users:
            ident = Identity(str(user.get("id") or uuid.uuid5(uuid.NAMESPACE_URL, user["username"])), user["username"])
            self.users[ident.username] = ident
        self.default_user = next(iter(self.users.values()))
        self.token_lifetime = int(config.get("token_lifetime_seconds", 172800))
        self.access = {}
        self.refresh = {}
        self.codes = {}

    def reset(self):
        with self.lock:
            self.access.clear()
            self.refresh.clear()
            self.codes.clear()

    # -------------------------------------------------------- client authentication

    def _authenticate_client(self, headers, form):
        """Return (client_id, is_confidential) or raise invalid_client, as Auth does (401)."""
        header = headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                raw = base64.b64decode(header.split(None, 1)[1]).decode()
                client_id, secret = raw.split(":", 1)
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(401, "invalid_client", "malformed Basic credentials") from None
            client_id = urllib.parse.unquote(client_id)
            secret = urllib.parse.unquote(secret)
            client = self.confidential.get(client_id)
            if client is None or not secrets.compare_digest(str(client.get("client_secret", "")), secret):
                raise OAuthError(401, "invalid_client", "Client authentication failed")
            return client_id, True
        client_id = form.get("client_id")
        if client_id in self.native:
            return client_id, False
        raise OAuthError(401, "invalid_client", "Client authentication failed")

    def _client_identity(self, client_id):
        cfg = self.confidential[client_id]
        return Identity(client_id, cfg.get("identity") or f"{client_id}@clients.auth.globus.org")

    # -------------------------------------------------------- token endpoint

    def token(self, headers, form):
        client_id, confidential = self._authenticate_client(headers, form)
        grant_type = form.get("grant_type")
        with self.lock:
            if grant_type == "client_credentials":
                if not confidential:
                    raise OAuthError(400, "unauthorized_client", "client_credentials needs a confidential client")
                return self._issue(client_id, self._client_identity(client_id), form.get("scope", ""), False, None)
            if grant_type == "authorization_code":
                return self._exchange_code(client_id, form)
            if grant_type == "refresh_token":
                return self._refresh(client_id, form)
        raise OAuthError(400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    def _issue(self, client_id, identity, scope_text, offline, state):
        try:
            scopes = parse_scopes(scope_text)
        except ValueError as exc:
            raise OAuthError(400, "invalid_scope", str(exc)) from None
        if not scopes:
            raise OAuthError(400, "invalid_scope", "no scopes were requested")
        by_rs = {}
        for scope in scopes:
            rs = resource_server_for(scope.name)
            if rs is None:
                raise OAuthError(400, "invalid_scope", f"Unknown scope: {scope.name}")
            for dep in scope.deps:
                if resource_server_for(dep.name) is None:
                    raise OAuthError(400, "invalid_scope", f"Unknown dependent scope: {dep.name}")
            by_rs.setdefault(rs, []).append(scope)
        docs = []
        for rs, rs_scopes in by_rs.items():
            grant = Grant(client_id, identity, rs, rs_scopes)
            docs.append(self._token_doc(grant, offline))
        top = dict(docs[0])
        top["other_tokens"] = docs[1:]
        if state is not None:
            top["state"] = state
        return top

    def _token_doc(self, grant, offline):
        access = AccessToken(secrets.token_urlsafe(32), grant, now(), now() + self.token_lifetime)
        self.access[access.token] = access
        doc = {
            "access_token": access.token,
            "expires_in": self.token_lifetime,
            "resource_server": grant.resource_server,
            "scope": grant.scope_string,
            "token_type": "Bearer",
        }
        if offline:
            refresh = RefreshToken(secrets.token_urlsafe(40), grant)
            self.refresh[refresh.token] = refresh
            doc["refresh_token"] = refresh.token
        if grant.resource_server == AUTH_RS and any(s.name == "openid" for s in grant.scopes):
            doc["id_token"] = _unsigned_id_token(grant)
        return doc

    def _exchange_code(self, client_id, form):
        code = self.codes.pop(form.get("code", ""), None)
        if code is None or code.expires_at < now() or code.client_id != client_id:
            raise OAuthError(400, "invalid_grant", "Invalid authorization code")
        if code.redirect_uri and form.get("redirect_uri") and form["redirect_uri"] != code.redirect_uri:
            raise OAuthError(400, "invalid_grant", "redirect_uri does not match the authorize request")
        if code.challenge:
            verifier = form.get("code_verifier", "")
            if code.challenge_method == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            else:
                computed = verifier
            if not secrets.compare_digest(computed, code.challenge):
                raise OAuthError(400, "invalid_grant", "code_verifier does not match code_challenge")
        elif client_id in self.native:
            raise OAuthError(400, "invalid_grant", "native apps must use PKCE")
        return self._issue(client_id, code.identity, code.scope_text, code.offline, code.state)

    def _refresh(self, client_id, form):
        record = self.refresh.get(form.get("refresh_token", ""))
        if record is None or not record.active or record.grant.client_id != client_id:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token")
        doc = self._token_doc(record.grant, False)
        doc["refresh_token"] = record.token
        doc["other_tokens"] = []
        return doc

    # -------------------------------------------------------- codes (the browser step)

    def issue_code(self, client_id, scope_text, username=None, challenge=None, challenge_method="S256",
                   redirect_uri=None, offline=False, state=None):
        """Create an authorization code as if the user had logged in and consented."""
        if client_id not in self.native and client_id not in self.confidential:
            raise OAuthError(400, "invalid_client", f"Unknown client {client_id}")
        try:
            parse_scopes(scope_text)
        except ValueError as exc:
            raise OAuthError(400, "invalid_scope", str(exc)) from None
        identity = self.default_user
        if username:
            identity = self.users.get(username) or Identity(str(uuid.uuid5(uuid.NAMESPACE_URL, username)), username)
        code = AuthCode(secrets.token_urlsafe(24), client_id, identity, scope_text, challenge,
                        challenge_method or "S256", redirect_uri, offline, state, now() + CODE_LIFETIME)
        with self.lock:
            self.codes[code.code] = code
        return code

    def authorize(self, query):
        """``GET /v2/oauth2/authorize``: skip the login page and redirect with a code."""
        if query.get("response_type", "code") != "code":
            raise OAuthError(400, "unsupported_response_type")
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri:
            raise OAuthError(400, "invalid_request", "redirect_uri is required")
        code = self.issue_code(
            query.get("client_id", ""), query.get("scope", ""), username=query.get("emulator_user"),
            challenge=query.get("code_challenge"), challenge_method=query.get("code_challenge_method", "S256"),
            redirect_uri=redirect_uri, offline=query.get("access_type") == "offline", state=query.get("state"),
        )
        params = {"code": code.code}
        if code.state is not None:
            params["state"] = code.state
        sep = "&" if "?" in redirect_uri else "?"
        return redirect_uri + sep + urllib.parse.urlencode(params)

    # -------------------------------------------------------- revoke / introspect

    def revoke(self, headers, form):
        self._authenticate_client(headers, form)
        token = form.get("token", "")
        with self.lock:
            if token in self.access:
                self.access[token].active = False
            if token in self.refresh:
                self.refresh[token].active = False
        return {"active": False}

    def introspect(self, headers, form):
        client_id, confidential = self._authenticate_client(headers, form)
        if not confidential:
            raise OAuthError(401, "invalid_client", "introspection needs a confidential client")
        with self.lock:
            record = self.access.get(form.get("token", ""))
            if record is None or not record.active or record.expires_at < now():
                return {"active": False}
            grant = record.grant
            doc = {
                "active": True,
                "scope": grant.scope_string,
                "client_id": grant.client_id,
                "sub": grant.identity.id,
                "username": grant.identity.username,
                "name": None,
                "email": None,
                "exp": int(record.expires_at),
                "iat": int(record.issued_at),
                "nbf": int(record.issued_at),
                "aud": [grant.resource_server, grant.client_id],
                "iss": "https://auth.globus.org",
                "token_type": "Bearer",
            }
            if "identity_set" in form.get("include", "").split(","):
                doc["identity_set"] = [grant.identity.id]
            return doc

    # -------------------------------------------------------- Transfer side

    def validate_bearer(self, header):
        """Return the grant of a valid Transfer access token or raise 401 AuthenticationFailed."""
        if not header or not header.lower().startswith("bearer "):
            raise APIError(401, "AuthenticationFailed", "No Authorization header provided")
        token = header.split(None, 1)[1].strip()
        with self.lock:
            record = self.access.get(token)
            if record is None or not record.active or record.expires_at < now():
                raise APIError(401, "AuthenticationFailed", "Token is not active")
            if record.grant.resource_server != TRANSFER_RS:
                raise APIError(401, "AuthenticationFailed", "Token is not valid for the Transfer service")
            return record.grant

    def expire_tokens(self, token=None):
        """Admin hook: make access tokens look expired so clients must refresh."""
        with self.lock:
            for record in self.access.values():
                if token is None or record.token == token:
                    record.expires_at = now() - 1
        return {"expired": True}


def _unsigned_id_token(grant):
    """A JWT-shaped placeholder; the emulator does not sign id tokens (no JWKS is served)."""

    def b64(obj):
        import json

        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"sub": grant.identity.id, "preferred_username": grant.identity.username,
              "iss": "https://auth.globus.org", "aud": grant.client_id, "iat": int(now())}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
