/** The Models tab's Deployments section: each served model's state, URL and a Stop button. */
import { h } from './dom';
import { requestAPI } from './request';
import { IDeployment } from './types';

/** A deployment's state borrows the run pills' colours: serving is "running", stopped is done. */
const STATE_CLASS: Record<string, string> = {
  Healthy: 'completed', Transitioning: 'starting', Failed: 'failed', Stopped: 'canceled'
};

export async function fetchDeployments(): Promise<IDeployment[]> {
  const { deployments } = await requestAPI<{ deployments: IDeployment[] }>('deployments');
  return deployments;
}

export function deploymentsSection(deployments: IDeployment[],
                                   refresh: () => void): HTMLElement {
  const section = h('div', { class: 'ct-deployments' },
    h('h3', { class: 'ct-section-title', text: 'Deployments' }));
  if (!deployments.length) {
    section.append(h('div', { class: 'ct-empty',
      text: 'No deployments: ws.model("name").deploy("svc") serves one.' }));
  }
  for (const d of deployments) {
    const live = d.state === 'Healthy' || d.state === 'Transitioning';
    const stop = h('button', { class: 'ct-stop', text: 'Stop' }) as HTMLButtonElement;
    stop.hidden = !live;
    stop.onclick = async () => {
      stop.disabled = true;
      stop.textContent = 'Stopping';
      await requestAPI(`runs/${encodeURIComponent(d.run)}/cancel`,
        { method: 'POST', body: JSON.stringify({ grace: 5 }) });
      refresh();
    };
    const stats = d.requests ? ` ${d.requests} requests, p50 ${d.latency_p50_ms.toFixed(1)} ms` +
      (d.errors ? `, ${d.errors} errors` : '') : '';
    section.append(h('div', { class: 'ct-deployment', 'data-deployment': d.name },
      h('div', { class: 'ct-run-line' },
        h('span', { class: 'ct-run-name', text: d.name }),
        h('span', { class: `ct-status ct-status-${STATE_CLASS[d.state] ?? 'other'}`,
          text: d.state }),
        stop),
      live ? h('a', { class: 'ct-link', href: `${d.url}/v2/models/${d.model.split(':')[0]}`,
        target: '_blank', text: d.url }) : null,
      h('div', { class: 'ct-version-meta', text: `${d.model}${stats}` }),
      d.reason && d.state === 'Failed' ? h('div', { class: 'ct-reason', text: d.reason }) : null));
  }
  return section;
}
