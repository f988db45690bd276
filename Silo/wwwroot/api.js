// What both pages share: the silo's JSON API, its errors as the API words them, and ids kept in this browser.

/** An id kept in localStorage under `key`, made once per browser (letters, digits and '-', as the API accepts). */
export function browserId(key) {
  let id = localStorage.getItem(key);
  if (!id) {
    id = crypto.randomUUID();
    localStorage.setItem(key, id);
  }
  return id;
}

/** The API's error as a sentence: OpenAI's error body {error: {message, param}}, plus Retry-After when busy. */
export async function errorText(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body?.error?.message) message = body.error.message;
  } catch { /* not JSON: keep the status line */ }
  const retry = response.headers.get('Retry-After');
  return retry ? `${message} (retry after ${retry} s)` : message;
}

/** fetch() with a JSON body; resolves to the parsed answer, or throws an Error carrying the API's message. */
export async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(await errorText(response));
  return response.status === 204 ? null : response.json();
}

/** Shows `message` in the page's alert (or hides it when empty). */
export function showError(message) {
  const box = document.getElementById('error');
  box.textContent = message ?? '';
  box.hidden = !message;
}

/** Fills `select` with the sizes the cluster serves (GET /v1/models), keeping `wanted` selected if served. */
export async function fillModels(select, wanted) {
  const models = await call('GET', '/v1/models');
  select.replaceChildren(...models.data.map(m => new Option(m.id, m.id)));
  if (models.data.length === 0) throw new Error('The silo serves no model yet: train one and start the silo with it (see the README).');
  if (wanted && models.data.some(m => m.id === wanted)) select.value = wanted;
  return models.data.map(m => m.id);
}
