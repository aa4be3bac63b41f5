/** A widget that refreshes itself on a Poll: backing off on errors, standing by while it is
 * hidden (a collapsed sidebar, a background tab). The sidebar and both panels are such widgets. */
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

export abstract class PolledWidget extends Widget {
  constructor(name: string, interval: number) {
    super();
    // The first tick runs after the constructors, so subclasses may use their own fields.
    this.poll = new Poll({
      auto: true,
      factory: () => this.refresh(),
      frequency: { interval, backoff: true, max: 30 * 1000 },
      name,
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  /** Fetch and show what the widget shows; a rejection makes the poll back off. */
  abstract refresh(): Promise<void>;

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  protected readonly poll: Poll;
}
