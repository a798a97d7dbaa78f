// Last, once every script above has defined what it holds.
$("#login").addEventListener("submit", onLogin);
begin().catch(err => { $("#live").textContent = "error: " + err.message; });
