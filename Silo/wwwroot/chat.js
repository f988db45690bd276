// The chat page: settings live in the user's session grain (GET/PATCH /v1/sessions/{id}), abstracts stream from
// POST /v1/abstracts as server-sent events, and Stop aborts the request (the silo frees its batch slot).
import { browserId, call, errorText, fillModels, showError } from './api.js';

const session = browserId('orleansgpt.session');
const $ = id => document.getElementById(id);
const settingFields = ['top_p', 'top_k', 'temperature', 'max_tokens', 'seed'];
let running = null; // the AbortController of the request being written

/** Shows the session's settings: all of them, or only `only` (after saving one field, so an answer arriving late
 * never overwrites what the user has typed into another field meanwhile). */
function showSettings(s, only) {
  if (!only || only === 'category') $('category').value = s.category;
  if ((!only || only === 'model') && [...$('model').options].some(o => o.value === s.model)) $('model').value = s.model;
  for (const name of settingFields)
    if (!only || only === name) $(name).value = s[name] ?? '';
}

function showHistory(history) {
  $('history').replaceChildren(...history.slice().reverse().map(entry => {
    const item = document.createElement('li');
    const heading = document.createElement('p');
    heading.innerHTML = '<strong></strong> <span class="meta"></span>';
    heading.querySelector('strong').textContent = `[${entry.category}] ${entry.title}`;
    heading.querySelector('.meta').textContent = `seed ${entry.seed}, version ${entry.version}`;
    const text = document.createElement('p');
    text.className = 'abstract';
    text.textContent = entry.abstract;
    const again = document.createElement('button');
    again.type = 'button';
    again.textContent = `Again with seed ${entry.seed}`;
    again.addEventListener('click', async () => {
      $('title').value = entry.title;
      if ($('category').value !== entry.category) {
        $('category').value = entry.category;
        await saveSetting('category');
      }
      await write(entry.seed);
    });
    item.append(heading, text, again);
    return item;
  }));
}

async function load() {
  $('session').textContent = session;
  try {
    const state = await call('GET', `/v1/sessions/${session}`);
    await fillModels($('model'), state.settings.model);
    showSettings(state.settings);
    showHistory(state.history);
  } catch (e) {
    showError(e.message);
  }
}

/** PATCH one setting; on refusal, say why and show what the session still holds. */
async function saveSetting(name) {
  const input = $(name);
  const value = input.value.trim();
  const body = {};
  body[name] = name === 'category' || name === 'model' ? value : value === '' ? null : Number(value);
  try {
    const state = await call('PATCH', `/v1/sessions/${session}`, body);
    showError('');
    showSettings(state.settings, name);
  } catch (e) {
    showError(e.message);
    try { showSettings((await call('GET', `/v1/sessions/${session}`)).settings, name); } catch { /* the error above says enough */ }
  }
}

/** Streams an abstract for the title into the page. */
async function write(seed) {
  const title = $('title').value.trim();
  if (!title) { showError('Enter a title first.'); return; }
  showError('');
  running = new AbortController();
  $('go').disabled = true;
  $('stop').disabled = false;
  $('output').textContent = '';
  $('status').textContent = 'Writing...';
  const started = performance.now();
  let tokens = 0, finish = null, version = null, stopped = false;
  try {
    const body = { title, session, stream: true };
    if (seed !== undefined) body.seed = seed;
    const response = await fetch('/v1/abstracts', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal: running.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6)).join('\n');
        if (!data || data === '[DONE]') continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        $('output').textContent += chunk.text;
        tokens += chunk.tokens ?? 1;
        version = chunk.version ?? version;
        finish = chunk.finish_reason ?? finish;
      }
    }
  } catch (e) {
    if (e.name === 'AbortError') stopped = true;
    else showError(e.message);
  } finally {
    running = null;
    $('go').disabled = false;
    $('stop').disabled = true;
  }
  const seconds = (performance.now() - started) / 1000;
  const why = stopped ? 'stopped' : finish === 'stop' ? 'finished (end of text)' : finish === 'length' ? 'cut at the max tokens limit' : finish ?? 'ended';
  $('status').textContent = `${why} · ${tokens} tokens in ${seconds.toFixed(1)} s (${(tokens / Math.max(seconds, 1e-3)).toFixed(1)} tokens/s)` +
    (version ? ` · checkpoint ${version}` : '');
  $('status').dataset.finish = stopped ? 'stopped' : finish ?? '';
  if (!stopped) {
    try { showHistory((await call('GET', `/v1/sessions/${session}`)).history); } catch (e) { showError(e.message); }
  }
}

$('write').addEventListener('submit', event => { event.preventDefault(); write(); });
$('stop').addEventListener('click', () => running?.abort());
for (const name of ['category', 'model', ...settingFields]) $(name).addEventListener('change', () => saveSetting(name));
load();
