// tether: signing in with an account (shared by the dashboard and the
// claim, invitation and people pages).
//
// The session is an HttpOnly cookie the scripts never see; what they see
// is GET /v1/session: who is signed in and the CSRF token that every
// request that changes something sends as X-CSRF-Token (and a WebSocket
// as the subprotocol "tether-csrf.<token>").

export class ApiError extends Error {
  constructor(kind, code, message, status) {
    super(message);
    this.kind = kind;
    this.code = code;
    this.status = status;
  }
}

/** What every account error says, with what to do next. */
export const ACCOUNT_MESSAGES = {
  unreachable: "Cannot reach the tether server. Check your network connection, then try again.",
  wrong_password:
    "Wrong email or password. Check both and try again. Forgot your password? Ask the account owner to invite you again.",
  account_exists: "An account with this email exists already. Sign in with it instead.",
  unknown_claim_code:
    "That claim code is not valid: it is mistyped or was already used. Check the code on the device's label.",
  claim_code_expired: "That claim code has expired. Ask the seller or installer of the device for a new claim code.",
  unknown_invitation:
    "This invitation link does not work: it was used already or withdrawn. Ask the person who invited you for a new link.",
  invitation_expired: "This invitation link has expired. Ask the person who invited you for a new link.",
  session_ended: "Your session has ended (you signed out, or the account owner removed you). Sign in again.",
  internal: "The server failed to do this. Try again in a minute.",
};

/** The text for an error of an account request. */
export function accountMessage(error) {
  if (error.kind === "unreachable") return ACCOUNT_MESSAGES.unreachable;
  switch (error.code) {
    case "rate_limited":
      if (/password/.test(error.message)) return "Too many wrong passwords. Wait 15 minutes, then try again.";
      if (/pending/.test(error.message)) return "Too many invitations are pending: withdraw some below, then try again.";
      return "Too many attempts. Wait a minute, then try again.";
    case "invalid_field":
      // The server says what is wrong and what to do.
      return error.message.charAt(0).toUpperCase() + error.message.slice(1);
    case "unauthorized":
      return ACCOUNT_MESSAGES.session_ended;
    case "forbidden":
      // The server's reason; where it names no next step, the owner decides.
      return /reload/.test(error.message)
        ? `Not allowed: ${error.message}.`
        : `Not allowed: ${error.message}. Ask the account owner if you need to do this.`;
    default:
      return ACCOUNT_MESSAGES[error.code] ?? `The request failed (${error.code}). Reload the page and try again.`;
  }
}

/**
 * A JSON request to the server. `csrf`: the session's CSRF token, sent as
 * X-CSRF-Token (requests that change something need it). `headers`:
 * extra headers (a receiver key).
 */
export async function request(method, path, body, { csrf, headers = {} } = {}) {
  const all = { ...headers };
  if (body !== undefined) all["Content-Type"] = "application/json";
  if (csrf) all["X-CSRF-Token"] = csrf;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError("unreachable", "unreachable", ACCOUNT_MESSAGES.unreachable, 0);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = data?.error?.code ?? `http_${response.status}`;
    throw new ApiError("http", code, data?.error?.message ?? response.statusText, response.status);
  }
  return data;
}

/** The signed-in session, or null when nobody is signed in. */
export async function currentSession() {
  try {
    return await request("GET", "/v1/session");
  } catch (error) {
    if (error.code === "unauthorized") return null;
    throw error;
  }
}

/** Signs in; the answer is the session (the cookie is set by the server). */
export function signIn(email, password) {
  return request("POST", "/v1/session", { email, password });
}

/** Signs out on the server (best effort: the cookie goes either way). */
export async function signOut(session) {
  try {
    await request("DELETE", "/v1/session", undefined, { csrf: session?.csrf_token });
  } catch {
    // Already ended, or the server is unreachable: nothing more to do here.
  }
}

/** The role as people read it. */
export function roleText(role) {
  switch (role) {
    case "owner": return "owner";
    case "member": return "read and command";
    case "read_only": return "read only";
    default: return role;
  }
}

/** Sets a form message: plain, ok or error. */
export function setMessage(element, text, kind) {
  element.textContent = text;
  element.classList.toggle("error", kind === "error");
  element.classList.toggle("ok", kind === "ok");
}
