// tether: the claim page (/claim#code=…, the QR code on a device label
// opens it), the invitation page (/invite#token=…) and the people page
// (/people). Plain ES module, no build step.

import { accountMessage, currentSession, request, roleText, setMessage, signIn } from "./session.js";

const $ = (id) => document.getElementById(id);

/** A value from the URL's fragment (`#name=…`) or query (`?name=…`). */
function fromUrl(name) {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const query = new URLSearchParams(location.search);
  return fragment.get(name) ?? query.get(name) ?? "";
}

function markInvalid(input, invalid) {
  if (invalid) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

/** Checks email and password in the browser first (the server checks again). */
function checkCredentials(emailInput, passwordInput, message, { newPassword }) {
  const email = emailInput.value.trim();
  const password = passwordInput.value;
  markInvalid(emailInput, false);
  markInvalid(passwordInput, false);
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) {
    markInvalid(emailInput, true);
    setMessage(message, "Enter your email address, like name@example.com.", "error");
    emailInput.focus();
    return null;
  }
  if (newPassword ? [...password].length < 8 : password.length === 0) {
    markInvalid(passwordInput, true);
    setMessage(message, newPassword ? "Choose a password of at least 8 characters." : "Enter your password.", "error");
    passwordInput.focus();
    return null;
  }
  return { email, password };
}

function go(path) {
  location.assign(path);
}

// ------------------------------------------------------------------ claim

/** A claim code as people type it: 12 letters and digits, dashes and spaces ignored. */
function claimCodeProblem(code) {
  if (!code) return "Enter the claim code printed on the device's label.";
  const normalized = code.replace(/[-\s]/g, "").toUpperCase();
  if (!/^[0-9A-Z]{12}$/.test(normalized)) {
    return "A claim code has 12 letters and digits, like XXXX-XXXX-XXXX. Check the code on the device's label.";
  }
  return null;
}

function claimErrorText(error) {
  if (error.code === "forbidden") {
    return "Your account is read only: it cannot add devices. Ask the account owner to add it, or to give you full access.";
  }
  return accountMessage(error);
}

async function claimPage() {
  const codeInput = $("claim-code");
  const message = $("claim-message");
  codeInput.value = fromUrl("code");
  let session = null;
  const show = (view) => {
    for (const id of ["signed-in-view", "create-view", "sign-in-view"]) $(id).hidden = id !== view;
  };
  const code = () => {
    const value = codeInput.value.trim();
    const problem = claimCodeProblem(value);
    markInvalid(codeInput, problem !== null);
    if (problem) {
      setMessage(message, problem, "error");
      codeInput.focus();
      return null;
    }
    return value;
  };
  const claimAsSignedIn = async () => {
    const value = code();
    if (!value) return;
    setMessage(message, "Adding the device…");
    try {
      const answer = await request("POST", "/v1/claim", { claim_code: value }, { csrf: session.csrf_token });
      setMessage(message, `Device ${answer.device} is now yours. Opening your devices…`, "ok");
      go("/");
    } catch (error) {
      if (["unknown_claim_code", "claim_code_expired"].includes(error.code)) markInvalid(codeInput, true);
      if (error.code === "unauthorized") {
        session = null;
        show("sign-in-view");
      }
      setMessage(message, claimErrorText(error), "error");
    }
  };

  $("claim-signed-in").addEventListener("click", claimAsSignedIn);
  $("show-sign-in").addEventListener("click", () => {
    show("sign-in-view");
    $("sign-in-email").focus();
  });
  $("show-create").addEventListener("click", () => {
    show("create-view");
    $("create-email").focus();
  });
  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = code();
    if (!value) return;
    const credentials = checkCredentials($("create-email"), $("create-password"), message, { newPassword: true });
    if (!credentials) return;
    $("create-account").disabled = true;
    setMessage(message, "Creating your account…");
    try {
      const answer = await request("POST", "/v1/accounts", { ...credentials, claim_code: value });
      setMessage(message, `Welcome! Device ${answer.device} is yours. Opening your devices…`, "ok");
      go("/");
    } catch (error) {
      if (["unknown_claim_code", "claim_code_expired"].includes(error.code)) markInvalid(codeInput, true);
      if (error.code === "account_exists") {
        $("sign-in-email").value = credentials.email;
        show("sign-in-view");
      }
      setMessage(message, accountMessage(error), "error");
    } finally {
      $("create-account").disabled = false;
    }
  });
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = code();
    if (!value) return;
    const credentials = checkCredentials($("sign-in-email"), $("sign-in-password"), message, { newPassword: false });
    if (!credentials) return;
    $("sign-in").disabled = true;
    setMessage(message, "Signing in…");
    try {
      session = await signIn(credentials.email, credentials.password);
      await claimAsSignedIn();
    } catch (error) {
      if (error.code === "wrong_password") markInvalid($("sign-in-password"), true);
      setMessage(message, accountMessage(error), "error");
    } finally {
      $("sign-in").disabled = false;
    }
  });

  try {
    session = await currentSession();
  } catch (error) {
    setMessage(message, accountMessage(error), "error");
  }
  if (session) {
    $("signed-in-as").textContent = `You are signed in as ${session.email}.`;
    show("signed-in-view");
  } else {
    show("create-view");
  }
  if (!codeInput.value) codeInput.focus();
}

// ------------------------------------------------------------ invitation

async function invitePage() {
  const token = fromUrl("token");
  const intro = $("invitation");
  const message = $("join-message");
  if (!token) {
    intro.textContent = "This page opens from an invitation link. Ask the person who invites you to send the link again.";
    return;
  }
  try {
    const invitation = await request("POST", "/v1/invitations/inspect", { token });
    const who = invitation.invited_by ?? "The account owner";
    intro.textContent = `${who} invited you to see their devices (${roleText(invitation.role)}). Create your account to join.`;
    $("join-form").hidden = false;
    $("join-email").focus();
  } catch (error) {
    intro.textContent = accountMessage(error);
    intro.classList.add("error");
    return;
  }
  $("join-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const credentials = checkCredentials($("join-email"), $("join-password"), message, { newPassword: true });
    if (!credentials) return;
    $("join").disabled = true;
    setMessage(message, "Creating your account…");
    try {
      await request("POST", "/v1/accounts", { ...credentials, invitation: token });
      setMessage(message, "Welcome! Opening the devices…", "ok");
      go("/");
    } catch (error) {
      setMessage(message, accountMessage(error), "error");
    } finally {
      $("join").disabled = false;
    }
  });
}

// ---------------------------------------------------------------- people

async function peoplePage() {
  const message = $("people-message");
  let session;
  try {
    session = await currentSession();
  } catch (error) {
    setMessage(message, accountMessage(error), "error");
    return;
  }
  if (!session) {
    go("/");
    return;
  }
  const owner = session.role === "owner";
  $("people-intro").textContent = owner
    ? "Invite the people who should see your devices, and choose what each of them can do."
    : `You are signed in as ${session.email} (${roleText(session.role)}). The account owner manages who has access.`;
  $("invite-section").hidden = !owner;

  const call = (method, path, body) => request(method, path, body, { csrf: session.csrf_token });
  const failed = (error) => {
    if (error.code === "unauthorized") {
      go("/");
      return;
    }
    setMessage(message, accountMessage(error), "error");
  };

  const render = (data) => {
    const rows = data.members.map((member) => {
      const row = document.createElement("tr");
      row.dataset.account = String(member.account_id);
      const email = document.createElement("th");
      email.scope = "row";
      email.className = "email";
      email.textContent = member.account_id === data.you ? `${member.email} (you)` : member.email;
      const can = document.createElement("td");
      can.className = "role";
      can.textContent = roleText(member.role);
      const actions = document.createElement("td");
      actions.className = "actions";
      if (owner && member.role !== "owner") {
        const label = document.createElement("label");
        label.className = "visually-hidden";
        label.htmlFor = `role-${member.account_id}`;
        label.textContent = `What ${member.email} can do`;
        const select = document.createElement("select");
        select.id = `role-${member.account_id}`;
        select.className = "role-select";
        for (const [value, text] of [["member", "Read and send commands"], ["read_only", "Read only"]]) {
          const option = document.createElement("option");
          option.value = value;
          option.textContent = text;
          option.selected = member.role === value;
          select.append(option);
        }
        select.addEventListener("change", async () => {
          try {
            await call("PATCH", `/v1/members/${member.account_id}`, { role: select.value });
            setMessage(message, `${member.email} can now: ${roleText(select.value)}.`, "ok");
            load();
          } catch (error) {
            failed(error);
          }
        });
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "danger remove";
        remove.textContent = "Remove";
        let armed = false;
        remove.addEventListener("click", async () => {
          if (!armed) {
            armed = true;
            remove.textContent = `Confirm: remove ${member.email}`;
            setTimeout(() => {
              armed = false;
              remove.textContent = "Remove";
            }, 8000);
            return;
          }
          try {
            await call("DELETE", `/v1/members/${member.account_id}`);
            setMessage(message, `${member.email} was removed and signed out everywhere.`, "ok");
            load();
          } catch (error) {
            failed(error);
          }
        });
        actions.append(label, select, remove);
      }
      row.append(email, can, actions);
      return row;
    });
    $("members").tBodies[0].replaceChildren(...rows);

    const items = data.invitations.map((invitation) => {
      const item = document.createElement("li");
      item.dataset.invitation = String(invitation.id);
      const until = new Date(invitation.expires_ms).toLocaleDateString();
      item.append(`${roleText(invitation.role)}, until ${until} `);
      const withdraw = document.createElement("button");
      withdraw.type = "button";
      withdraw.className = "secondary";
      withdraw.textContent = "Withdraw";
      withdraw.addEventListener("click", async () => {
        try {
          await call("DELETE", `/v1/invitations/${invitation.id}`);
          setMessage(message, "The invitation was withdrawn: its link no longer works.", "ok");
          load();
        } catch (error) {
          failed(error);
        }
      });
      item.append(withdraw);
      return item;
    });
    $("invitations").replaceChildren(...items);
    $("invitations-empty").hidden = items.length > 0;
  };

  const load = async () => {
    try {
      render(await call("GET", "/v1/members"));
    } catch (error) {
      failed(error);
    }
  };

  $("invite-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("create-invitation").disabled = true;
    try {
      const invitation = await call("POST", "/v1/invitations", { role: $("invite-role").value });
      $("invitation-link").value = `${location.origin}${invitation.path}`;
      $("invitation-result").hidden = false;
      $("invitation-link").select();
      setMessage(message, `Invitation created (${roleText(invitation.role)}). Send the link; it works once, for 7 days.`, "ok");
      load();
    } catch (error) {
      failed(error);
    } finally {
      $("create-invitation").disabled = false;
    }
  });
  $("copy-link").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("invitation-link").value);
      setMessage(message, "Link copied.", "ok");
    } catch {
      $("invitation-link").select();
      setMessage(message, "Copying is not allowed here: the link is selected, copy it with Ctrl+C (or long-press on a phone).", "error");
    }
  });
  load();
}

const pages = { claim: claimPage, invite: invitePage, people: peoplePage };
pages[document.body.dataset.page]?.();
