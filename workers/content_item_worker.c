/* content_item_worker - syncs content items, their text and code content and chunks (see schemas/mapping.cfg). */
#include "worker.h"

int main(int argc, char **argv)
{
    return worker_main(argc, argv, "content_item",
                       "content items, their text and code content and chunks");
}
