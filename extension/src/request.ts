/** The one way the front end talks to the server extension: GET/POST under /celltrain/. */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The server answered 404 for the extension's own root: it is not installed or not enabled. */
export class MissingServerExtension extends Error {}

export const MISSING_MESSAGE =
  'The celltrain server extension is not running in this Jupyter server, so the sidebar has ' +
  'nothing to show. Install celltrain in the environment that runs JupyterLab ' +
  '(pip install celltrain), check `jupyter server extension list` shows it enabled ' +
  '(`jupyter server extension enable celltrain`), then restart JupyterLab.';

/** The URL of an endpoint, for links (file downloads) as well as requests. */
export function apiUrl(...parts: string[]): string {
  const settings = ServerConnection.makeSettings();
  return URLExt.join(settings.baseUrl, 'celltrain', ...parts);
}

/** Call ``/celltrain/<endPoint>``; rejects with the server's own message on an error. */
export async function requestAPI<T>(endPoint: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'celltrain', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: Jupyter's own error page, kept as text
    }
  }
  if (!response.ok) {
    if (response.status === 404 && endPoint.split('?')[0] === 'workspace') {
      throw new MissingServerExtension(MISSING_MESSAGE);
    }
    const message = (data && data.message) || response.statusText || String(response.status);
    throw new ServerConnection.ResponseError(response, message);
  }
  return data as T;
}
