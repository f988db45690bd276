// The evaluation page: a title with the real abstract and a generated one in random order; the person picks the
// real one and rates both (POST /v1/evaluations), then gets the next pair. Results come from GET /v1/evaluations.
import { browserId, call, fillModels, showError } from './api.js';

const evaluator = browserId('orleansgpt.evaluator');
const $ = id => document.getElementById(id);
const ratings = ['fluency_a', 'relevance_a', 'fluency_b', 'relevance_b'];
let pair = null;

for (const name of ratings)
  $(name).replaceChildren(new Option('choose', ''), ...[1, 2, 3, 4, 5].map(n => new Option(String(n), String(n))));

async function nextPair() {
  $('judge').hidden = true;
  $('loading').hidden = false;
  try {
    pair = await call('POST', '/v1/evaluations/pairs', { evaluator, model: $('model').value });
    showError('');
    $('category').textContent = `cs.${pair.category}`;
    $('pair').textContent = pair.pair_id;
    $('judged').textContent = `${pair.judged} judged so far`;
    $('title').textContent = pair.title;
    $('a').textContent = pair.a;
    $('b').textContent = pair.b;
    $('judge').reset();
    $('judge').hidden = false;
  } catch (e) {
    showError(e.message);
  } finally {
    $('loading').hidden = true;
  }
}

function percent(x) { return x === null || x === undefined ? '-' : `${(100 * x).toFixed(0)}%`; }
function mean(x) { return x === null || x === undefined ? '-' : x.toFixed(2); }

async function showResults() {
  try {
    const results = await call('GET', '/v1/evaluations');
    const rows = [['All', results.overall],
      ...results.by_category.map(c => [`cs.${c.category}`, c.results]),
      ...results.by_version.map(v => [`${v.model} ${v.version}`, v.results])];
    $('results').tBodies[0].replaceChildren(...rows.map(([group, r]) => {
      const row = document.createElement('tr');
      for (const text of [group, String(r.n), percent(r.found_real_rate), r.interval_95 ? `${percent(r.interval_95[0])} to ${percent(r.interval_95[1])}` : '-',
        `${mean(r.real.fluency)} / ${mean(r.generated.fluency)}`, `${mean(r.real.relevance)} / ${mean(r.generated.relevance)}`]) {
        const cell = document.createElement('td');
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }));
  } catch (e) {
    showError(e.message);
  }
}

$('judge').addEventListener('submit', async event => {
  event.preventDefault();
  const form = new FormData($('judge'));
  const body = { evaluator, pair_id: pair.pair_id, picked: form.get('picked') };
  for (const name of ratings) body[name] = Number(form.get(name));
  $('submit').disabled = true;
  try {
    await call('POST', '/v1/evaluations', body);
    await showResults();
    await nextPair();
  } catch (e) {
    showError(e.message);
  } finally {
    $('submit').disabled = false;
  }
});
$('model').addEventListener('change', nextPair);

(async () => {
  try {
    await fillModels($('model'));
  } catch (e) {
    showError(e.message);
    return;
  }
  await Promise.all([showResults(), nextPair()]);
})();
