/** A tiny element builder: the sidebar and panels are plain DOM, no framework. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: (Node | string | null | undefined)[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) {
      continue;
    }
    if (k === 'text') {
      node.textContent = String(v);
    } else {
      node.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child);
    }
  }
  return node;
}

export function age(t: number | null | undefined): string {
  if (!t) {
    return '';
  }
  const s = Date.now() / 1000 - t;
  if (s < 60) {
    return `${Math.max(0, Math.round(s))}s ago`;
  }
  if (s < 3600) {
    return `${Math.round(s / 60)}m ago`;
  }
  if (s < 86400) {
    return `${Math.round(s / 3600)}h ago`;
  }
  return new Date(t * 1000).toLocaleDateString();
}

export function duration(start: number | null, end: number | null): string {
  if (!start) {
    return '';
  }
  const s = (end ?? Date.now() / 1000) - start;
  return s < 120 ? `${s.toFixed(1)}s` : s < 7200 ? `${(s / 60).toFixed(1)}m` : `${(s / 3600).toFixed(1)}h`;
}

export function statusBadge(status: string): HTMLElement {
  return h('span', { class: `ct-status ct-status-${status.toLowerCase()}`, 'data-status': status,
    text: status });
}
